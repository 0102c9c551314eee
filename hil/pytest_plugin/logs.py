"""Logs of a test's boards and gateway: kept as files in the test's work directory, named in JUnit,
and their tails attached to the report of a failed test.

Each fixture that brings something up registers a :class:`KeptLog` on the test item
(:func:`keep_log`): the board's console (``<tmp_path>/<device id>/console.log``) or the gateway's
output (``<tmp_path>/gateway/gateway.log``). The file is written when the fixture tears the board
down (also after a failed bring-up) and whenever a phase of the test fails; the plugin's
``pytest_runtest_makereport`` then adds the tail of each as a report section, and the paths are
JUnit properties of the test (``hil_log:<what>``).

What a board's console log holds depends on the backend: on **sim** everything the board printed (the
simulator keeps the last MiB); on **qemu** and **serial** the console is the test's REPL port, which
only the test reads, so the log holds the boot output the strategy read up to the firmware's
``running`` line.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import pytest

# Annotations only: hil.backends.board drives boards through hil.dut (mpremote, the field extra), which
# the plugin does not import when pytest loads it.
if TYPE_CHECKING:
    from hil.backends.board import BoardHandle


log = logging.getLogger(__name__)

TAIL_LINES = 40
"""Lines of each log shown in a failed test's report."""
TAIL_CHARS = 6000
"""At most this much of each log's tail in a report (a board that prints one endless line)."""
JUNIT_PROPERTY = "hil_log"
"""JUnit property name prefix of a kept log (``hil_log:console sl-1``, ``hil_log:gateway``)."""


@dataclass
class KeptLog:
    """One log file of a test.

    Attributes:
        title: what it is, e.g. ``board console streetlight-hil-1a2b3c`` or ``gateway log``.
        path: the file.
        read: the log's whole current text; None when the source is gone (a board powered off).
        write: True when :meth:`save` writes ``path`` from ``read`` (a board console); False when the
            source writes the file itself as it goes (the gateway's output).
    """

    title: str
    path: Path
    read: Callable[[], str | None]
    write: bool = True
    _last: str | None = field(default=None, repr=False)

    def save(self) -> str | None:
        """Write the current text to :attr:`path` (when :attr:`write`) and return it; the last text
        read when the source is gone; None when there never was any."""
        try:
            text = self.read()
        except Exception as exc:  # noqa: BLE001 - a log must never turn a test result into an error
            log.warning("reading %s failed: %s", self.title, exc)
            text = None
        if text is None:
            text = self._last
        elif self.write:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.path.write_text(text, encoding="utf-8", errors="replace")
            except OSError as exc:
                log.warning("writing %s to %s failed: %s", self.title, self.path, exc)
        self._last = text
        if text is None and self.path.is_file():
            return self.path.read_text(encoding="utf-8", errors="replace")
        return text


logs_key = pytest.StashKey[list[KeptLog]]()


def keep_log(item: pytest.Item, kept: KeptLog, *, name: str) -> KeptLog:
    """Register ``kept`` on ``item``: saved on failure and named in JUnit as ``hil_log:<name>``."""
    item.stash.setdefault(logs_key, []).append(kept)
    item.user_properties.append((f"{JUNIT_PROPERTY}:{name}", str(kept.path)))
    return kept


def keep_board_console(item: pytest.Item, handle: BoardHandle) -> KeptLog:
    """Keep ``handle``'s console as ``<handle.workdir>/console.log`` (see the module docstring)."""
    return keep_log(item, KeptLog(f"board console {handle.device_id}", handle.workdir / "console.log",
                                  lambda: board_console_text(handle)), name=f"console {handle.device_id}")


def board_console_text(handle: BoardHandle) -> str | None:
    """What ``handle``'s board printed: the whole console of a virtual board while it is up, else the
    boot output the strategy read; None when there is nothing (yet)."""
    console_text = getattr(handle.resource, "console_text", None)
    if handle.backend == "sim" and callable(console_text):
        return str(console_text())
    boot = handle.extras.get("boot_console")
    if isinstance(boot, str) and boot:
        note = "" if handle.backend == "sim" else (
            f"[{handle.backend} backend: the console is the test's REPL port; this is the boot output read up to "
            "the firmware's running line]\n")
        return note + boot
    return None


def save_logs(item: pytest.Item) -> list[tuple[KeptLog, str]]:
    """Save every log kept for ``item``; ``(log, text)`` of those that have any text."""
    out = []
    for kept in item.stash.get(logs_key, []):
        text = kept.save()
        if text:
            out.append((kept, text))
    return out


def log_tail(text: str, *, lines: int = TAIL_LINES, chars: int = TAIL_CHARS) -> str:
    """The last ``lines`` lines of ``text`` (at most ``chars`` characters), saying how much was left out."""
    all_lines = text.rstrip("\n").splitlines()
    tail = "\n".join(all_lines[-lines:])
    if len(tail) > chars:
        tail = "…" + tail[-chars:]
    if len(all_lines) > lines:
        return f"[last {lines} of {len(all_lines)} lines]\n{tail}"
    return tail


def failure_sections(item: pytest.Item) -> list[tuple[str, str]]:
    """Report sections ``(title, tail)`` for every kept log of ``item`` that has text, files saved first."""
    return [(f"{kept.title} ({kept.path})", log_tail(text)) for kept, text in save_logs(item)]


def console_failure_hint(boards: Sequence[BoardHandle]) -> Callable[[str | None], str | None]:
    """A ``GatewayProcess.failure_hint`` saying which awaited board's console shows that its firmware
    refused to start (``civicedge: cannot start: ...``, ``not provisioned``, ``safe mode``) after it last
    said it runs (e.g. when the test restarted it): the likely reason no report arrived. (Tracebacks are
    not taken as a sign: code a test runs at the REPL prints them on the same console.)"""
    held = list(boards)

    def hint(device_id: str | None) -> str | None:
        for board in held:
            if device_id is not None and board.device_id != device_id:
                continue
            text = board_console_text(board)
            if not text:
                continue
            from hil.backends.board import REFUSAL_PATTERN, running_pattern  # a board exists: it was imported

            console = text.encode("utf-8", errors="replace")
            since = 0
            for match in running_pattern(board.device_id).finditer(console):
                since = match.end()
            refusal = REFUSAL_PATTERN.search(console, since)
            if refusal is None:
                continue
            return (f"hint: {board.device_id}'s firmware refused to start after it last ran: its console says "
                    f"{refusal.group(0).decode(errors='replace').strip()!r} (see the report section "
                    f"'board console {board.device_id}')")
        return None

    return hint


__all__ = ["JUNIT_PROPERTY", "KeptLog", "TAIL_LINES", "board_console_text", "console_failure_hint", "failure_sections",
           "keep_board_console", "keep_log", "log_tail", "logs_key", "save_logs"]
