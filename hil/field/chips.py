"""What the flasher must know per chip: esptool's name and where the MicroPython image goes."""

from __future__ import annotations

from dataclasses import dataclass

from hil.field.errors import FieldError


@dataclass(frozen=True)
class ChipProfile:
    """Flash layout facts for one chip family.

    Attributes:
        name: our chip name as used in board definitions (``esp32``, ``esp32c3``...).
        esptool_name: the ``CHIP_NAME`` esptool reports for it (``ESP32``, ``ESP32-C3``).
        image_offset: where a MicroPython release image (bootloader included) is written.
        image_chip_id: the chip id an ESP firmware image built for this chip carries in its
            extended header (esptool's ``IMAGE_CHIP_ID``; u16 little-endian at byte 12).
    """

    name: str
    esptool_name: str
    image_offset: int
    image_chip_id: int

    @property
    def micropython_image(self) -> str:
        """MicroPython's generic release image for this chip as micropython.org names it, with ``*`` for
        the version: ``ESP32_GENERIC-*.bin``, ``ESP32_GENERIC_C3-*.bin`` (from :attr:`esptool_name`)."""
        variant = self.esptool_name.removeprefix("ESP32").replace("-", "_")  # "ESP32-S3" -> "_S3"
        return f"ESP32_GENERIC{variant}-*.bin"


# MicroPython's combined release images start with the second-stage bootloader, which the ROM
# loads from 0x1000 on the original ESP32/ESP32-S2 and from 0x0 on the newer chips.
CHIPS: dict[str, ChipProfile] = {
    "esp32": ChipProfile("esp32", "ESP32", 0x1000, 0),
    "esp32s2": ChipProfile("esp32s2", "ESP32-S2", 0x1000, 2),
    "esp32s3": ChipProfile("esp32s3", "ESP32-S3", 0x0, 9),
    "esp32c3": ChipProfile("esp32c3", "ESP32-C3", 0x0, 5),
    "esp32c6": ChipProfile("esp32c6", "ESP32-C6", 0x0, 13),
}


def chip_profile(name: str) -> ChipProfile:
    """Return the profile of chip ``name`` or raise a :class:`FieldError` listing the known chips."""
    try:
        return CHIPS[name.lower()]
    except KeyError:
        raise FieldError(
            f"unknown chip {name!r}; known chips: {', '.join(sorted(CHIPS))}", chip=name
        ) from None


def chip_from_esptool_name(esptool_name: str) -> ChipProfile | None:
    """Map esptool's reported ``CHIP_NAME`` (e.g. ``ESP32-C3``) to our profile, if we know it."""
    for profile in CHIPS.values():
        if profile.esptool_name == esptool_name.upper():
            return profile
    return None
