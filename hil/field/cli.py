"""``civicedge flash`` / ``provision`` / ``check``: the two commands at the streetlight, and a check.

Each command lives in its own module (:mod:`hil.field.flash_cmd`, :mod:`hil.field.provision_cmd`,
:mod:`hil.field.check_cmd`); what they share is in :mod:`hil.field.cli_common`,
:mod:`hil.field.cli_steps` and :mod:`hil.field.firmware_restart`.

Every failure ends with one ``error:`` line saying what to do, and exit status 2 (bad input,
board, port or gateway) or 1 (the check found a problem). Keys are never printed: labels carry
the key fingerprint.
"""

from __future__ import annotations

import argparse

from hil.field import check_cmd, flash_cmd, provision_cmd


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``flash``, ``provision`` and ``check`` to the ``civicedge`` command line."""
    flash_cmd.add_parser(subparsers)
    provision_cmd.add_parser(subparsers)
    check_cmd.add_parser(subparsers)
