"""The installed civicedge version, for ``civicedge --version``, the start log line, /metrics and /healthz."""

from __future__ import annotations

import functools

DISTRIBUTION = "civicedge"


@functools.cache
def gateway_version() -> str:
    """The version of the installed ``civicedge`` distribution (its metadata), else ``gateway.__version__``.

    The metadata is what ``pip`` installed, so it names the release actually running; a source tree
    used without installing it falls back to the package's own ``__version__``.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        from gateway import __version__

        return __version__
