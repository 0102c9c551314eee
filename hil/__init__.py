"""civicedge HIL harness: virtual boards, QEMU and real boards, pytest plugin, field tooling."""

from gateway import __version__ as __version__  # one version for the host (pyproject reads gateway's)
