"""Field tooling: flash MicroPython and our firmware onto a board, provision its identity, check it reports."""
