"""boards/manifest.py, the MicroPython freeze manifest, freezes the whole civic package.

The manifest is read here the way MicroPython's manifest tool reads it (a Python file calling
``include``/``package``); building the image itself needs ESP-IDF, which CI does not have.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MANIFEST = REPO / "boards" / "manifest.py"


def test_manifest_freezes_every_civic_module_from_the_firmware_tree() -> None:
    calls: list[tuple[str, tuple[object, ...], dict[str, object]]] = []
    env = {name: (lambda *a, _n=name, **k: calls.append((_n, a, k))) for name in ("include", "package", "module",
                                                                                 "freeze", "require")}
    exec(compile(MANIFEST.read_text(), str(MANIFEST), "exec"), env)  # noqa: S102 - our own build file
    assert ("include", ("$(PORT_DIR)/boards/manifest.py",), {}) in calls   # the port's own modules stay
    packages = [(a, k) for n, a, k in calls if n == "package"]
    assert len(packages) == 1
    (name,), kw = packages[0]
    base = (MANIFEST.parent / str(kw["base_path"])).resolve()
    assert name == "civic" and base == REPO / "firmware" / "lib"
    # package() freezes the directory tree recursively: every firmware module is in it
    modules = sorted(p.relative_to(base).as_posix() for p in (base / "civic").rglob("*.py"))
    assert "civic/uplink/uart.py" in modules and "civic/apps/runtime.py" in modules
