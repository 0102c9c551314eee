"""A token file written to while the gateway reads it is not taken: it is stat'ed again after the read
(the path, and the descriptor held open across it) and read again once it settles. The settle time
trusted the file's times against this host's clock, which NFS, SMB or FUSE servers set by their own:
a half-written token was taken (or, too short, refused as unusable: every admin call 503)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.config.loader import read_admin_token
from gateway.web import auth
from gateway.web.auth import TOKEN_RECHECK_S, TOKEN_SETTLE_S, AdminToken

OLD = "3b9d0f41c7a2e58d6f1b0c9e4a7d2f85"
NEW = "c81e5a09f2d7b4e63a0f9c1d8b2e7a45"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _settle(tok: AdminToken, clock: Clock) -> None:
    """A look that sees the change, then one after it stayed the same for the settle time (which reads it)."""
    clock.now += TOKEN_RECHECK_S
    tok.refresh()
    clock.now += TOKEN_SETTLE_S
    tok.refresh()


def _write(path: Path, text: str) -> None:
    with open(path, "r+") as fh:
        fh.truncate(0)
        fh.write(text)


@pytest.mark.parametrize("half", [NEW[:20], NEW[:10]])  # a token-shaped half, and one too short to be one
def test_a_write_during_the_read_keeps_the_change_pending(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          half: str) -> None:
    path = tmp_path / "admin.token"
    path.write_text(OLD + "\n")
    path.chmod(0o600)
    clock = Clock()
    tok = AdminToken(OLD, clock, path=path)
    _write(path, half)  # the writer has written part of the new token

    reads = []

    def read_during_a_write(p: Path) -> str:
        try:
            return read_admin_token(p)  # sees the half
        finally:
            reads.append(p)
            if len(reads) == 1:
                with open(p, "a") as fh:  # the writer goes on while the gateway reads
                    fh.write(NEW[len(half):] + "\n")

    monkeypatch.setattr(auth, "read_admin_token", read_during_a_write)
    _settle(tok, clock)  # the half-written state has looked the same for the settle time
    assert reads, "the file was not read"
    assert tok.problem is None, tok.problem
    assert tok._token == OLD.encode(), "a token read while its file was being written was taken"
    clock.now += TOKEN_RECHECK_S / 2  # the completed file has not settled yet
    tok.refresh()
    assert tok._token == OLD.encode() and len(reads) == 1
    clock.now += TOKEN_SETTLE_S
    tok.refresh()
    assert tok._token == NEW.encode() and tok.problem is None and len(reads) == 2


def test_a_file_replaced_during_the_read_is_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "admin.token"
    path.write_text(OLD + "\n")
    path.chmod(0o600)
    clock = Clock()
    tok = AdminToken(OLD, clock, path=path)
    _write(path, NEW[:20])
    reads = []

    def read_then_replace(p: Path) -> str:
        text = read_admin_token(p)
        reads.append(text)
        if len(reads) == 1:
            tmp = p.with_name("admin.token.new")
            tmp.write_text(NEW + "\n")
            tmp.chmod(0o600)
            os.replace(tmp, p)
        return text

    monkeypatch.setattr(auth, "read_admin_token", read_then_replace)
    _settle(tok, clock)
    assert tok._token == OLD.encode() and tok.problem is None
    clock.now += TOKEN_RECHECK_S + TOKEN_SETTLE_S
    tok.refresh()
    assert tok._token == NEW.encode() and reads == [NEW[:20], NEW]


def test_an_unchanged_file_is_taken_at_once(tmp_path: Path) -> None:
    path = tmp_path / "admin.token"
    path.write_text(OLD + "\n")
    path.chmod(0o600)
    clock = Clock()
    tok = AdminToken(OLD, clock, path=path)
    _write(path, NEW + "\n")
    _settle(tok, clock)
    assert tok._token == NEW.encode() and tok.problem is None
