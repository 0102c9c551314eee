"""Pin tables of the supported chips: which GPIOs exist and what each can do.

Sources: Espressif ESP32, ESP32-C3 and ESP32-S3 datasheets (GPIO & RTC GPIO, ADC channel and
strapping pin tables) and the MicroPython ESP32 port quick reference. Adding a chip: docs/boards.md,
"Adding a chip".
"""

from __future__ import annotations

from dataclasses import dataclass


NEEDS = {"in": "an input", "in-pull": "an input with a pull resistor", "out": "an output", "adc": "an ADC input",
         "wake": "a deep-sleep wake input", "wake-pull": "a deep-sleep wake input with a pull resistor"}
"""What a pin can be needed for (:meth:`ChipSpec.usable`), as a free-pin hint words it."""


@dataclass(frozen=True)
class ChipSpec:
    """What a chip's GPIO matrix offers.

    Attributes:
        name: chip name as written in board files (``esp32``, ``esp32c3``, ``esp32s3``).
        gpios: GPIO numbers that exist on the chip.
        adc1: GPIOs with an ADC1 channel (usable with the radio on).
        adc2: GPIOs with an ADC2 channel (ESP32: unusable while Wi-Fi is on).
        input_only: GPIOs that cannot drive an output.
        no_pull: GPIOs without internal pull-up/pull-down resistors.
        reserved: GPIOs wired to the SPI flash/PSRAM (or its supply) or the USB port, never usable,
            with the reason.
        strapping: GPIOs sampled at reset; usable with care, never for an input pulled the wrong way.
        wake_capable: GPIOs that can wake the chip from deep sleep (RTC GPIOs).
        console_pins: (tx, rx) of UART0, the MicroPython REPL.
        uart_ids: UART peripherals a board file may use for a data link (UART0 is the console).
        adc_unreliable: ADC GPIOs the chip's errata advise against (accepted; a hint lists them
            last, as a last resort).
    """

    name: str
    gpios: frozenset[int]
    adc1: frozenset[int]
    adc2: frozenset[int]
    input_only: frozenset[int]
    no_pull: frozenset[int]
    reserved: dict[int, str]
    strapping: frozenset[int]
    wake_capable: frozenset[int]
    console_pins: tuple[int, int]
    uart_ids: frozenset[int]
    adc_unreliable: frozenset[int] = frozenset()

    @property
    def adc_pins(self) -> frozenset[int]:
        """All GPIOs with an ADC channel."""
        return self.adc1 | self.adc2

    def usable(self, need: str) -> frozenset[int]:
        """GPIOs a board may use for ``need``: not reserved, not the console.

        ``need`` is one of :data:`NEEDS`: ``in``, ``out``, ``adc``, ``wake`` (an input that wakes
        the chip from deep sleep); ``in-pull`` and ``wake-pull`` are such inputs read with an internal
        pull resistor (the recovery pin, ``pull = "up"``/``"down"``).
        """
        pins = self.gpios - set(self.reserved) - set(self.console_pins)
        if need.endswith("-pull"):
            pins -= self.no_pull
        base = need.removesuffix("-pull")
        if base == "out":
            pins -= self.input_only
        elif base == "adc":
            pins &= self.adc_pins
        elif base == "wake":
            pins &= self.wake_capable
        return pins

    def free_hint(self, need: str, used: set[int]) -> str:
        """Which free GPIOs can do ``need``, for an error message; strapping pins come last, marked."""
        free = sorted(self.usable(need) - used)
        what = NEEDS.get(need, need)
        if not free:
            return f"no GPIO left on {self.name} for {what}"
        weak = [str(p) for p in free if need == "adc" and p in self.adc_unreliable]
        good = [p for p in free if not (need == "adc" and p in self.adc_unreliable)]
        plain = [str(p) for p in good if p not in self.strapping]
        strap = [str(p) for p in good if p in self.strapping]
        text = f"free GPIOs for {what}: {', '.join(plain) or 'none'}"
        if strap:
            text += f" (strapping pins, only with care: {', '.join(strap)})"
        if weak:
            text += f"; last resort: {', '.join(weak)} (ADC2 on {self.name}, unreliable per Espressif's errata)"
        return text


ESP32 = ChipSpec(
    name="esp32",
    gpios=frozenset([*range(0, 20), 21, 22, 23, 25, 26, 27, *range(32, 40)]),
    adc1=frozenset(range(32, 40)),
    adc2=frozenset([0, 2, 4, 12, 13, 14, 15, 25, 26, 27]),
    input_only=frozenset(range(34, 40)),
    no_pull=frozenset(range(34, 40)),
    reserved={n: "connected to the SPI flash" for n in range(6, 12)},
    strapping=frozenset([0, 2, 5, 12, 15]),
    wake_capable=frozenset([0, 2, 4, 12, 13, 14, 15, 25, 26, 27, *range(32, 40)]),
    console_pins=(1, 3),
    uart_ids=frozenset([1, 2]),
)

# GPIO18/19 are the USB-Serial/JTAG port: on boards without a USB-UART chip (SuperMini-class, the
# shipped bin's) it is the only way to the REPL, so to flash, provision and check the board.
# UART0 (GPIO21/20) stays reserved as the console too: boards with a USB-UART chip wire it there,
# and the ROM prints its boot log on GPIO21 at every reset.
ESP32C3 = ChipSpec(
    name="esp32c3",
    gpios=frozenset(range(0, 22)),
    adc1=frozenset(range(0, 5)),
    adc2=frozenset([5]),
    input_only=frozenset(),
    no_pull=frozenset(),
    reserved={11: "VDD_SPI (flash supply)", **{n: "connected to the SPI flash" for n in range(12, 18)},
              18: "USB D- (USB-Serial/JTAG: MicroPython's REPL on boards without a USB-UART chip)",
              19: "USB D+ (USB-Serial/JTAG: MicroPython's REPL on boards without a USB-UART chip)"},
    strapping=frozenset([2, 8, 9]),
    wake_capable=frozenset(range(0, 6)),
    console_pins=(21, 20),
    uart_ids=frozenset([1]),
    # ESP32-C3 errata: ADC2 may give wrong results; ESP-IDF v5 refuses it in oneshot mode unless
    # CONFIG_ADC_ONESHOT_FORCE_USE_ADC2_ON_C3 is set.
    adc_unreliable=frozenset([5]),
)

# GPIO22-25 do not exist. GPIO26-32 are the SPI flash / quad PSRAM bus on every module; GPIO33-37
# are its octal lines (SPIIO4-7, SPIDQS) on modules with octal flash or PSRAM (ESP32-S3-WROOM-1
# N8R8, N16R8, ...). A board file does not say which module variant it has, and a pin used by an
# octal PSRAM crashes the board at the first PSRAM access, so 33-37 are reserved on every S3 board.
# GPIO19/20 are the native USB D-/D+: the port MicroPython's ESP32_GENERIC_S3 build also offers its
# REPL on and esptool flashes through on boards without a USB-UART chip.
ESP32S3 = ChipSpec(
    name="esp32s3",
    gpios=frozenset([*range(0, 22), *range(26, 49)]),
    adc1=frozenset(range(1, 11)),
    adc2=frozenset(range(11, 21)),
    input_only=frozenset(),
    no_pull=frozenset(),
    reserved={
        **{n: "connected to the SPI flash / PSRAM" for n in range(26, 33)},
        **{n: "octal flash / PSRAM on modules with octal PSRAM (e.g. ESP32-S3-WROOM-1 N8R8); reserved on "
              "every S3 board, docs/boards.md" for n in range(33, 38)},
        19: "USB D- (native USB: a REPL of MicroPython's S3 build, and esptool)",
        20: "USB D+ (native USB: a REPL of MicroPython's S3 build, and esptool)",
    },
    strapping=frozenset([0, 3, 45, 46]),
    wake_capable=frozenset(range(0, 22)),
    console_pins=(43, 44),
    uart_ids=frozenset([1, 2]),
)

CHIPS: dict[str, ChipSpec] = {spec.name: spec for spec in (ESP32, ESP32C3, ESP32S3)}
"""Every supported chip by name."""
