"""``civicedge gateway export-log`` and ``civicedge gateway verify-log FILE`` (provenance chain)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gateway.cli.common import EXIT_ERROR, EXIT_OK, add_config_arg, config_from, fail
from gateway.errors import GatewayError, ProvenanceError
from gateway.storage.provenance import export_chain, verify_export


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``export-log`` and ``verify-log``."""
    exp = sub.add_parser("export-log", help="export the provenance hash chain as JSON Lines")
    add_config_arg(exp)
    exp.add_argument("--db", type=Path, help="report store (overrides the config)")
    exp.add_argument("-o", "--output", type=Path, help="output file (default: stdout)")
    exp.set_defaults(func=cmd_export)
    ver = sub.add_parser("verify-log", help="verify an exported provenance log; exit 1 at the first broken link")
    ver.add_argument("file", type=Path)
    ver.set_defaults(func=cmd_verify)


def cmd_export(args: argparse.Namespace) -> int:
    """Export the chain."""
    try:
        db = args.db if args.db is not None else config_from(args).storage.path
        if not Path(db).is_file():
            print("error (open_failed): no report store at %s" % db, file=sys.stderr)
            return EXIT_ERROR
        if args.output is None:
            count = export_chain(db, sys.stdout)
        else:
            with args.output.open("w", encoding="utf-8") as fh:
                count = export_chain(db, fh)
    except GatewayError as exc:
        return fail(exc)
    print("exported %d entries" % count, file=sys.stderr)
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    """Verify an export."""
    try:
        with args.file.open("r", encoding="utf-8") as fh:
            count = verify_export(fh)
    except OSError as exc:
        print("error (bad_path): cannot read %s: %s" % (args.file, exc.strerror), file=sys.stderr)
        return EXIT_ERROR
    except ProvenanceError as exc:
        print("BROKEN at line %d (%s): %s" % (exc.line, exc.reason, exc))
        return EXIT_ERROR
    print("OK: %d entries, chain intact" % count)
    return EXIT_OK
