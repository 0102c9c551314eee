"""Build step of the ``civicedge`` distribution (the rest of its metadata is in pyproject.toml).

``firmware/`` (the MicroPython code, its privacy policy) and ``boards/`` (board definitions, freeze
manifest) sit at the top of the repository, outside the import packages, yet the installed
commands read them: the gateway's policy gate, ``flash``, ``sim``, ``boards``, ``hil``. ``build_py``
copies both trees whole into the built ``gateway`` package as ``gateway/_bundle/firmware`` and
``gateway/_bundle/boards``; :mod:`gateway.resources` finds them there in an installed wheel, and at
the top of the checkout otherwise. Copying whole trees (rather than mapping them as packages with
file patterns) means a new firmware module, sub-package or board file ships without a
pyproject.toml edit. The sdist carries the trees through MANIFEST.in.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.errors import FileError

ROOT = Path(__file__).resolve().parent
BUNDLED_TREES = ("firmware", "boards")
BUNDLE_DIR = Path("gateway") / "_bundle"  # gateway.resources.BUNDLE_DIR
_NOT_SHIPPED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo")


class BuildPyWithBundle(build_py):
    """``build_py`` that also copies ``firmware/`` and ``boards/`` into ``gateway/_bundle/``."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the checkout's own firmware/ and boards/
        for name in BUNDLED_TREES:
            source = ROOT / name
            if not source.is_dir():
                raise FileError(f"{source} is missing: the civicedge distribution cannot be built without it")
            target = Path(self.build_lib) / BUNDLE_DIR / name
            shutil.rmtree(target, ignore_errors=True)  # a file deleted since the last build must not linger
            shutil.copytree(source, target, ignore=_NOT_SHIPPED)


setup(cmdclass={"build_py": BuildPyWithBundle})
