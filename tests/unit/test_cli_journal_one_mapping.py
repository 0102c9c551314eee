"""The CLI's `error`/`warning` messages in the journal take their priority from the one mapping of log
levels to journal priorities (gateway.systemd), the one the log handler uses: an ERROR log line and an
`error ...` message are stored at the same priority whatever that mapping says.

Was: hil.cli.main wrote the literals <3> and <4>, a second copy of the mapping that a change to
gateway.systemd.PRIORITIES would have left behind."""

from __future__ import annotations

import io
import logging

import pytest

from gateway import systemd
from hil.cli.main import JournalMessages


def _log_prefix(levelno: int) -> str:
    record = logging.LogRecord("gateway", levelno, __file__, 1, "x", None, None)
    return systemd.JournalFormatter("%(message)s").format(record)[:-1]  # "<N>x" -> "<N>"


def _message_prefix(text: str) -> str:
    out = io.StringIO()
    print(text, file=JournalMessages(out))
    return out.getvalue().split(text)[0]


@pytest.mark.parametrize("priorities", [
    systemd.PRIORITIES,  # as shipped: <3> and <4>
    ((logging.CRITICAL, 1), (logging.ERROR, 2), (logging.WARNING, 3), (logging.INFO, 5)),  # another mapping
])
def test_messages_and_log_lines_share_one_mapping(monkeypatch: pytest.MonkeyPatch,
                                                  priorities: tuple[tuple[int, int], ...]) -> None:
    monkeypatch.setattr(systemd, "PRIORITIES", priorities)
    assert _message_prefix("error (corrupt): the store is damaged") == _log_prefix(logging.ERROR)
    assert _message_prefix("warning: disk low") == _log_prefix(logging.WARNING)
    assert _message_prefix("config OK: gateway gw-1") == ""
    assert {_log_prefix(logging.ERROR), _log_prefix(logging.WARNING)} == {
        "<%d>" % dict((lvl, p) for lvl, p in priorities)[lvl] for lvl in (logging.ERROR, logging.WARNING)}
