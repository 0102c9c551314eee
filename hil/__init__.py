"""civicedge HIL harness: virtual boards, QEMU and real boards, pytest plugin, field tooling."""

__version__ = "0.1.0"
