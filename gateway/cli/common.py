"""Helpers shared by the gateway commands."""

from __future__ import annotations

import argparse
import contextlib
import os
import stat
import sys
import tempfile
from pathlib import Path
from typing import IO, Iterator

from gateway.config import GatewayConfig, default_config, load_config
from gateway.errors import GatewayError
from gateway.storage.store_files import check_store_free

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2


def add_config_arg(parser: argparse.ArgumentParser) -> None:
    """Add ``--config PATH`` (defaults apply when omitted)."""
    parser.add_argument("--config", "-c", type=Path, metavar="PATH",
                        help="gateway TOML config (default: built-in defaults)")


def config_from(args: argparse.Namespace, *, read_only: bool = False, store_free: bool = False) -> GatewayConfig:
    """Load ``--config`` or return the embedded defaults.

    Args:
        args: the parsed command line (``args.config``).
        read_only: for a command that only reads the store or the registry (``export-log``,
            ``devices list|show``): their paths must be readable, not writable (a backup on a
            read-only mount). Commands that write keep the default.
        store_free: for ``gateway run``: also refuse, as opening the store would, a store another
            gateway is writing, one with hard links, a symlinked ``-wal``/``-shm`` or another user's
            files, and a ``retention.json`` start-up cannot read (nothing is created). With
            ``args.check`` (``run --check``) everything ``run`` opens at start is checked read-only
            (:func:`gateway.cli.run_check.check_for_run`) and one line per item is printed; a gateway
            already running on the store is named, not an error.

    Raises:
        ConfigError: the config is invalid.
        GatewayError: with ``store_free``, what ``run`` would refuse: StorageError (``in_use``,
            ``hard_linked``, ``symlinked``, ``not_owned``, ``open_failed``, ``corrupt``, ``not_a_store``,
            ``bad_retention_file``), RegistryError (``corrupt``, ...), TransportError (HTTP port).
    """
    path: Path | None = getattr(args, "config", None)
    # `gateway run` (not --check) keeps collecting with a refused [opendata] key: metadata is not data.
    lenient = store_free and not getattr(args, "check", False)
    config = (load_config(path, read_only=read_only, lenient_opendata=lenient) if path is not None
              else default_config(read_only=read_only))
    if store_free:
        from gateway.cli.run_check import RETENTION_FILE, check_for_run, check_retention_file

        if getattr(args, "check", False):
            for line in check_for_run(config):
                print(line)
        else:
            check_store_free(config.storage.path)
            # start-up applies it whatever [http] says (9636f0d); say in plain words what is wrong first
            from gateway.resources import load_policy

            check_retention_file(config.data_dir / RETENTION_FILE, load_policy())
    return config


def fail(exc: GatewayError) -> int:
    """Print a gateway error for the operator and return the error exit code."""
    reason = getattr(exc, "reason", "error")
    key = getattr(exc, "key", None)
    where = " [%s]" % key if key else ""
    print("error (%s)%s: %s" % (reason, where, exc), file=sys.stderr)
    return EXIT_ERROR


@contextlib.contextmanager
def atomic_text_file(path: Path) -> Iterator[IO[str]]:
    """Yield a UTF-8 text stream whose content replaces ``path`` only when the block succeeds.

    The text goes to a temporary file beside ``path``, is synced, and is renamed over ``path`` at
    the end, so an interrupted or failed write never leaves half a file and never touches an
    existing one. An existing file keeps its mode; a new one gets the usual ``0666 & ~umask``.

    Raises:
        OSError: the temporary file cannot be created or written, or the rename fails.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".%s." % path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _mode_for(path))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _mode_for(path: Path) -> int:
    """The permission bits ``path`` has, or a new file would get (mkstemp's 0600 is for secrets)."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask
