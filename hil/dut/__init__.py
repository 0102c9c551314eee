"""DUT transport: one MicroPython raw-REPL client (on mpremote's transport) for every backend."""
