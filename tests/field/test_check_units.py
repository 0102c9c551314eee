"""Pure parts of flash/check: the machine string, the console's fatal lines, waiting for a new
report, and when the next report is due."""

from __future__ import annotations

import os
from typing import Any

import pytest

from hil.dut import Dut
from hil.field.board_facts import chip_from_machine
from hil.field.check import ConsoleWatch, link_test_result, next_report_due, supports_link_test, wait_new_report
from hil.field.errors import FirmwareStartError, NoReportError


@pytest.mark.parametrize(("machine", "chip"), [
    ("Generic ESP32 module with ESP32", "esp32"),
    ("ESP32 module (spiram) with ESP32", "esp32"),
    ("ESP32C3 module with ESP32C3", "esp32c3"),
    ("Generic ESP32S3 module with ESP32S3", "esp32s3"),
    ("JS with Emscripten", None),  # the simulator's wasm MicroPython
    ("Raspberry Pi Pico with RP2040", None),
    (None, None),
])
def test_chip_from_machine(machine: str | None, chip: str | None) -> None:
    assert chip_from_machine(machine) == chip


def test_console_watch_finds_cannot_start_across_chunks() -> None:
    watch = ConsoleWatch()
    assert watch.feed(b"soft reboot\r\ncivicedge: cannot sta") is None
    line = watch.feed(b"rt: runtime: identity kind 'streetlight' but board kind 'bin'\r\n")
    assert line == "civicedge: cannot start: runtime: identity kind 'streetlight' but board kind 'bin'"
    assert ConsoleWatch().feed(b"civicedge: boot.py error: ValueError('invalid pin')\r\n") == \
        "civicedge: boot.py error: ValueError('invalid pin')"
    crash = ConsoleWatch()
    assert crash.feed(b"Traceback (most recent call last):\r\n  File \"main.py\", line 3\r\n") is None
    assert crash.feed(b"MemoryError: memory allocation failed\r\n") == "firmware crashed: MemoryError: memory allocation failed"
    assert ConsoleWatch().feed(b"civicedge: streetlight sl-1 running (uart)\r\nValueError here\r\n") is None


@pytest.mark.parametrize("prompt", [b">>> ", b">>> >>> ", b"... "])
def test_console_watch_sees_fatal_lines_after_the_repl_prompt(prompt: bytes) -> None:
    # QA: on virtual boards main() runs after the REPL prompt: ">>> civicedge: cannot start: invalid pin".
    assert ConsoleWatch().feed(prompt + b"civicedge: cannot start: invalid pin\r\n") == \
        "civicedge: cannot start: invalid pin"
    crash = ConsoleWatch()
    assert crash.feed(prompt + b"Traceback (most recent call last):\r\n") is None
    assert crash.feed(b"OSError: [Errno 5] EIO\r\n") == "firmware crashed: OSError: [Errno 5] EIO"
    assert ConsoleWatch().feed(prompt + b"print('civicedge: cannot start')\r\n") is None


def test_console_watch_reads_the_firmwares_answer_to_the_link_test() -> None:
    # The lines of firmware civic.apps.runtime.Runtime.answer_link_test (tests/firmware/test_link_test.py).
    answered = ConsoleWatch()
    assert answered.feed(b">>> civicedge: streetlight sl-1 running (uart)\r\ncivicedge: link test: boot report ") is None
    assert answered.link_test is None  # an incomplete line says nothing yet
    assert answered.feed(b"queued (seq 33)\r\n") is None
    assert answered.running and answered.link_test == "answered"
    declined = ConsoleWatch()
    declined.feed(b"civicedge: link test: outbox half full or more (32 of 64 reports wait), "
                  b"no boot report queued\r\n")
    assert declined.link_test == "declined"
    failed = ConsoleWatch()
    failed.feed(b"civicedge: link test: boot report failed: OSError(28,)\r\n")
    assert failed.link_test == "declined"
    assert ConsoleWatch().link_test is None


def test_link_test_result_says_whether_check_needed_the_window() -> None:
    assert link_test_result(supported=True, requested=True, answer="answered") == "answered"
    assert link_test_result(supported=True, requested=True, answer="declined") == "declined"
    assert link_test_result(supported=True, requested=True, answer=None) == "unanswered"
    assert link_test_result(supported=True, requested=False, answer=None) == "not_written"
    assert link_test_result(supported=False, requested=False, answer=None) == "unsupported"


class FakeWatch:
    def __init__(self, after: int) -> None:
        self.polls = 0
        self.after = after

    def mark(self) -> None:
        self.polls = 0

    def new_report(self) -> dict[str, Any] | None:
        self.polls += 1
        return {"seq": 8} if self.polls > self.after else None


def test_wait_new_report_stops_at_the_fatal_console_line() -> None:
    chunks = iter([b"soft reboot\r\n", b"civicedge: cannot start: runtime: identity kind 'streetlight' but board "
                   b"kind 'bin'\r\n"])
    with pytest.raises(FirmwareStartError, match="console says: civicedge: cannot start: runtime: identity kind"):
        wait_new_report(FakeWatch(after=1000), device_id="sl-0031", timeout_s=30,
                        console=lambda _s: next(chunks, b""))


def test_wait_new_report_returns_the_new_report_or_times_out() -> None:
    assert wait_new_report(FakeWatch(after=2), device_id="sl-1", timeout_s=5, console=lambda _s: b"",
                           poll_s=0.01) == {"seq": 8}
    with pytest.raises(NoReportError, match="within 0.05 s"):
        wait_new_report(FakeWatch(after=1000), device_id="sl-1", timeout_s=0.05, poll_s=0.01)


def test_next_report_due_covers_the_window_close() -> None:
    boundary = 1_759_999_500  # a multiple of 900
    due = next_report_due(board_unix=boundary + 5, window_s=900, interval_s=5)
    assert due.due_unix == boundary + 900
    assert due.wait_s == 895 + 60 + 5  # the old fixed 120 s could not cover it
    unset = next_report_due(board_unix=0, window_s=900, interval_s=300)
    assert unset.due_unix is None and unset.wait_s == 2 * 900 + 60 + 300


def test_a_board_that_does_not_answer_the_link_test_question_is_unknown_not_older() -> None:
    # A real Dut on a pty whose board end is gone: the question gets a link error. Before, check took
    # that for an older firmware ("unsupported", with a flash command).
    master, slave = os.openpty()
    with Dut(os.ttyname(slave)) as dut:
        os.close(master)
        support = supports_link_test(dut)
    os.close(slave)
    assert support is None
    assert link_test_result(supported=support, requested=False, answer=None) == "unknown"
    assert link_test_result(supported=False, requested=False, answer=None) == "unsupported"
