"""Wake one waiting task from an interrupt handler (PIR, lid, UART RX, BLE events).

On an ESP32 this is ``asyncio.ThreadSafeFlag``, the one asyncio primitive that may be set from
an IRQ and that wakes an event loop blocked in its poll. Ports without it (the WebAssembly port
the simulator runs, where IRQ callbacks run between event-loop iterations on the JS loop) get an
``asyncio.Event``, which wakes the loop there. Either way tasks sleep until there is work instead
of polling: less power on a board, less host time in the simulator.
"""

import asyncio


class _FlagSignal:
    def __init__(self):
        self._flag = asyncio.ThreadSafeFlag()

    def set(self):
        self._flag.set()

    async def wait_ms(self, ms):
        try:
            await asyncio.wait_for_ms(self._flag.wait(), max(ms, 1))
            return True
        except asyncio.TimeoutError:
            return False


class _EventSignal:
    def __init__(self):
        self._event = asyncio.Event()

    def set(self):
        self._event.set()

    async def wait_ms(self, ms):
        ev = self._event
        if not ev.is_set():
            try:
                await asyncio.wait_for_ms(ev.wait(), max(ms, 1))
            except asyncio.TimeoutError:
                return False
        ev.clear()
        return True


Signal = _FlagSignal if hasattr(asyncio, "ThreadSafeFlag") else _EventSignal
"""``Signal()``: a self-clearing flag. ``set()`` is IRQ-safe; ``await wait_ms(ms)`` returns True
when it was set (and clears it), False after ``ms`` milliseconds without a ``set()``."""
