"""``civicedge docs``: where the documentation, changelog, systemd unit and alert rules of this installation are.

Messages and ``--help`` texts name pages as ``docs/gateway.md``; a wheel carries those pages, their data files
(``docs/protocol-vectors.json``), ``CHANGELOG.md``, the gateway's systemd unit and the Prometheus alert rules
inside the package (:mod:`gateway.resources`), where a user would not look. This command lists them, prints a
page's path or text, and prints the unit or the alert rules for redirecting into place.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
from pathlib import Path

from gateway.resources import alert_rules_path, changelog_path, docs_dir, service_unit_path
from gateway.stdout_data import write_utf8

EXIT_MISSING = 1  # the installation lacks the file (an incomplete or older install)
EXIT_USAGE = 2  # no page of that name
CHANGELOG = "changelog"
"""The name ``CHANGELOG.md`` goes by (``civicedge docs changelog --show``)."""


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``docs`` command."""
    parser = subparsers.add_parser(
        "docs", help="where this installation's docs, changelog, systemd unit and alert rules are",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Messages name documentation pages as docs/NAME.md; an installed civicedge carries them\n"
                    "(and CHANGELOG.md, the gateway's systemd unit and its Prometheus alert rules) inside\n"
                    "the package. Without arguments: list them with their paths.\n"
                    "\n"
                    "examples:\n"
                    "  civicedge docs gateway             # the path of docs/gateway.md\n"
                    "  civicedge docs upgrading --show    # its text\n"
                    "  civicedge docs protocol-vectors    # the path of docs/protocol-vectors.json\n"
                    "  civicedge docs changelog --show | less\n"
                    "  civicedge docs --unit > /etc/systemd/system/civicedge-gateway.service\n"
                    "  civicedge docs --alerts > /etc/prometheus/rules/civicedge-alerts.yml")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("page", nargs="?", metavar="NAME",
                      help=f"a page: gateway, gateway.md or docs/gateway.md; a data file: protocol-vectors, "
                           f"protocol-vectors.json or docs/protocol-vectors.json; {CHANGELOG} for CHANGELOG.md")
    what.add_argument("--unit", action="store_true",
                      help="print the gateway's systemd unit (scripts/civicedge-gateway.service), its "
                           "Documentation= pointing at this installation's docs/gateway.md")
    what.add_argument("--alerts", action="store_true",
                      help="print the Prometheus alert rules (scripts/prometheus/civicedge-alerts.yml)")
    parser.add_argument("--show", action="store_true", help="print the page's text instead of its path")
    parser.set_defaults(func=cmd_docs)


def pages() -> dict[str, Path]:
    """The documentation pages by name (``gateway`` for ``docs/gateway.md``), the data files by file name
    (``protocol-vectors.json``), then ``changelog``."""
    found = {path.stem: path for path in sorted(docs_dir().glob("*.md"))}
    found.update((path.name, path) for path in sorted(docs_dir().glob("*.json")))
    found[CHANGELOG] = changelog_path()
    return found


def page_path(name: str) -> Path | None:
    """The page ``name`` (``gateway``, ``gateway.md``, ``docs/gateway.md``, ``changelog``, ``CHANGELOG.md``)
    or data file (``protocol-vectors``, ``protocol-vectors.json``, ``docs/protocol-vectors.json``) names, or
    None when there is none. A bare name is a page before a data file of that stem."""
    known = pages()
    key = name.strip().removeprefix("docs/")
    if key.endswith(".json"):
        return known.get(key)
    key = key.removesuffix(".md")
    key = CHANGELOG if key.lower() == CHANGELOG else key
    return known.get(key) or known.get(f"{key}.json")


def service_unit_text() -> str:
    """The systemd unit, its ``Documentation=`` made the URL of this installation's ``docs/gateway.md``
    (the file names ``/opt/civicedge/docs``, a checkout's place, which an installed package does not have)."""
    lines = service_unit_path().read_text(encoding="utf-8").splitlines(keepends=True)
    doc = (docs_dir() / "gateway.md").as_uri()
    return "".join(f"Documentation={doc}\n" if line.startswith("Documentation=") else line for line in lines)


def running_civicedge() -> Path | None:
    """The ``civicedge`` script running now (resolved), else the one on PATH, else None.

    The running script first: ``pip install --user`` puts it in ``~/.local/bin`` and runs it with
    ``/usr/bin/python3``; run as ``python -m hil.cli.main``, the one beside ``sys.executable``.
    """
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if script is not None and script.name == "civicedge" and script.is_file():
        return script.resolve()
    beside = Path(sys.executable).parent / "civicedge"  # python -m hil.cli.main: this interpreter's own
    if beside.is_file():
        return beside.resolve()
    found = shutil.which("civicedge")
    return Path(found).resolve() if found else None


def _exec_start_note(unit: str) -> str | None:
    """A warning when the unit's ``ExecStart=`` program does not exist or is another ``civicedge`` than this
    one, else None."""
    here = running_civicedge()
    for line in unit.splitlines():
        if line.startswith("ExecStart="):
            words = shlex.split(line.removeprefix("ExecStart="))
            if not words:
                return None
            there = words[0].lstrip("@-:+!")  # systemd's prefixes (ignore failure, run privileged, ...)
            this = f"this civicedge is {here}" if here else "no civicedge is on PATH"
            program = there if "/" in there else shutil.which(there)  # systemd looks a bare name up
            if program is None or not os.path.isfile(program):
                return (f"warning: the unit's ExecStart= runs {there}, which does not exist; {this}: edit "
                        "ExecStart= to the civicedge the service should run")
            if here is not None and Path(program).resolve() != here:
                return (f"warning: the unit's ExecStart= runs {there}; {this}: edit ExecStart= "
                        "if the service should run this one")
    return None


def _missing(path: Path) -> int:
    print(f"error: {path} is not in this installation: it is incomplete or older than `civicedge docs`; "
          "reinstall civicedge", file=sys.stderr)
    return EXIT_MISSING


def cmd_docs(args: argparse.Namespace) -> int:
    """Run ``civicedge docs``; return the exit status."""
    if args.show and args.page is None:
        print("error: --show needs a page name (civicedge docs NAME --show); see `civicedge docs` for the names",
              file=sys.stderr)
        return EXIT_USAGE
    if args.unit or args.alerts:
        path = service_unit_path() if args.unit else alert_rules_path()
        if not path.is_file():
            return _missing(path)
        text = service_unit_text() if args.unit else path.read_text(encoding="utf-8")
        note = _exec_start_note(text) if args.unit else None
        if note:
            print(note, file=sys.stderr)  # stderr: stdout is redirected into the unit file
        write_utf8(text)  # the file as it is, whatever the terminal's locale
        return 0
    if args.page is None:
        return _list()
    page = page_path(args.page)
    if page is None:
        print(f"error: no page {args.page!r}; pages: {', '.join(pages())}", file=sys.stderr)
        return EXIT_USAGE
    if not page.is_file():
        return _missing(page)
    if args.show:
        text = page.read_text(encoding="utf-8")
        if page.suffix == ".md" and sys.stdout.isatty():
            sys.stdout.write(text)  # a person reads it: what the terminal cannot show is escaped
        else:
            write_utf8(text)  # into a file or a program (protocol-vectors.json): the file's UTF-8
    else:
        print(page)
    return 0


def _list() -> int:
    if not docs_dir().is_dir():
        return _missing(docs_dir())
    rows = [*pages().items(), ("--unit", service_unit_path()), ("--alerts", alert_rules_path())]
    width = max(len(name) for name, _ in rows)
    for name, path in rows:
        print(f"{name:<{width}}  {path}")
    return 0
