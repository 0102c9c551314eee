"""Hardware abstraction: builds ESP32 MicroPython hardware objects from ``/board.json``.

Only APIs the ESP32 port ships are used (``machine.Pin``, ``machine.ADC``, ``machine.PWM``,
``machine.UART``, ``machine.time_pulse_us``, ``machine.RTC``, ``machine.WDT``,
``machine.deepsleep``, ``bluetooth.BLE``, ``esp32`` wake sources). The objects are handed to the
apps as constructor arguments, never kept as module globals, so the same app code runs on a
board, in the simulator (which provides ``machine``/``bluetooth``), and in tests with fakes.
"""
