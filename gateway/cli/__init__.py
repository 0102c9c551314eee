"""``civicedge gateway ...`` commands: run, init, devices, export-log, verify-log, retention, backup, restore."""

from __future__ import annotations

import argparse

from gateway.cli import archive_log_cmd, backup_cmd, devices_cmd, log_cmd, restore_cmd, retention_cmd, run_cmd


def register(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add the ``gateway`` command group to the top-level parser."""
    parser = subparsers.add_parser("gateway", help="run and manage the city gateway",
                                   description="Run the gateway, manage its device registry, provenance log and retention, and back it up and restore it.")
    sub = parser.add_subparsers(dest="gateway_command", metavar="SUBCOMMAND", required=True)
    run_cmd.register(sub)
    devices_cmd.register(sub)
    log_cmd.register(sub)
    archive_log_cmd.register(sub)
    retention_cmd.register(sub)
    backup_cmd.register(sub)
    restore_cmd.register(sub)
