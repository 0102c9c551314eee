"""Ctrl-C after a retried firmware sync: the retry found nothing left to copy, but the first attempt had
written files. The message said "no firmware file on the board was changed (0 of 0 copied)"."""

from __future__ import annotations

import argparse

import pytest

from hil.field.flash_cmd import _FlashProgress, _interrupted


def _args() -> argparse.Namespace:
    return argparse.Namespace(board="streetlight-esp32", port="/dev/ttyUSB0", firmware_only=True, micropython=None,
                              no_erase=False, source=False, repl_timeout=20.0)


def test_a_retried_sync_keeps_what_the_first_attempt_copied() -> None:
    done = _FlashProgress()
    for copied in range(4):  # first attempt: 3 of 7 written, then the link failed
        done.count(copied, 7)
    done.count(0, 4)  # the retry hashes again: 4 still differ
    done.count(1, 4)
    assert (done.copied_before, done.copied, done.to_copy) == (3, 1, 4)
    done.count(0, 0)  # a third attempt finds nothing left
    assert (done.copied_before, done.copied, done.to_copy) == (4, 0, 0)


def _message(done: _FlashProgress, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(KeyboardInterrupt):
        with _interrupted(_args(), done):
            raise KeyboardInterrupt
    captured = capsys.readouterr()
    return captured.out + captured.err


def test_interrupted_after_a_retry_that_copied_files_does_not_say_nothing_changed(
        capsys: pytest.CaptureFixture[str]) -> None:
    done = _FlashProgress(writing_started=True, firmware_intact=True, firmware_restarted=True)
    done.count(0, 5)
    done.count(5, 5)
    done.count(0, 0)  # the retry: every file already matches
    text = _message(done, capsys)
    assert "no firmware file on the board was changed" not in text, text
    assert "already matches the new firmware (5 copied before a retry)" in text, text
    assert "manifest was not written" in text and "re-run to finish: civicedge flash" in text, text


def test_interrupted_with_nothing_to_copy_still_says_nothing_changed(capsys: pytest.CaptureFixture[str]) -> None:
    done = _FlashProgress(writing_started=True, firmware_intact=True, firmware_restarted=True)
    done.count(0, 0)
    text = _message(done, capsys)
    assert "no firmware file on the board was changed (0 of 0 copied)" in text, text
    assert "copied before a retry" not in text, text


def test_interrupted_retry_with_files_left_to_copy_is_partly_written(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Review LOW-1: the first attempt wrote files new in this release (the old /firmware.json does not list
    them), the retry found 4 still differing and was interrupted before writing one. The old manifest still
    verified, so the old firmware was restarted and the message said every file matched the new firmware."""
    from hil.field import flash_cmd

    def no_check(*_args: object, **_kwargs: object) -> bool:
        raise AssertionError("an incomplete copy is not checked against the old manifest")

    monkeypatch.setattr(flash_cmd, "_link_answers", no_check)
    done = _FlashProgress(writing_started=True)
    done.count(0, 7)
    done.count(3, 7)  # the link failed
    done.count(0, 4)  # the retry: Ctrl-C before it wrote one
    flash_cmd._after_failed_flash(None, _args(), copying=True, interrupted=True, done=done)  # type: ignore[arg-type]
    assert not done.firmware_intact and not done.firmware_restarted
    text = _message(done, capsys)
    assert "already matches" not in text and "no firmware file" not in text, text
    assert "the board may hold a partly written firmware" in text, text
