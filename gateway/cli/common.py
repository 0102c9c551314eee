"""Helpers shared by the gateway commands."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gateway.config import GatewayConfig, default_config, load_config
from gateway.errors import GatewayError

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2


def add_config_arg(parser: argparse.ArgumentParser) -> None:
    """Add ``--config PATH`` (defaults apply when omitted)."""
    parser.add_argument("--config", "-c", type=Path, metavar="PATH",
                        help="gateway TOML config (default: built-in defaults)")


def config_from(args: argparse.Namespace) -> GatewayConfig:
    """Load ``--config`` or return the embedded defaults."""
    path: Path | None = getattr(args, "config", None)
    return load_config(path) if path is not None else default_config()


def fail(exc: GatewayError) -> int:
    """Print a gateway error for the operator and return the error exit code."""
    reason = getattr(exc, "reason", "error")
    key = getattr(exc, "key", None)
    where = " [%s]" % key if key else ""
    print("error (%s)%s: %s" % (reason, where, exc), file=sys.stderr)
    return EXIT_ERROR
