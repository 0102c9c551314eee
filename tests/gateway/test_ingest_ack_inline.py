"""ACKs on a link whose writes never wait (a serial port: ``Link.send_nowait``) are sent inline after the
commit, without a Task and a timeout each; what the link raises never undoes the commit."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from conftest import KEYS
from helpers import report_frame

from gateway.errors import TransportError
from gateway.metrics import GatewayMetrics
from gateway.pipeline import IngestService, Link, Verifier
from gateway.protocol import FRAME_ACK, build_frame, parse_frame, verify_tag
from gateway.protocol.frame import tag_key
from gateway.registry import Registry
from gateway.resources import load_policy
from gateway.storage import ReportQueries, ReportStore


class NowaitLink:
    """A link answering through ``send_nowait`` only; ``raises`` is raised by the next writes instead."""

    def __init__(self) -> None:
        self.acks: list[tuple[str, int]] = []
        self.raises: list[Exception] = []
        self.link = Link(name="serial:now", kind="serial", send=self.send, send_nowait=self.send_now)

    async def send(self, frame: bytes) -> None:
        raise AssertionError("ingest awaited send() on a link with send_nowait")

    def send_now(self, frame: bytes) -> None:
        if self.raises:
            raise self.raises.pop(0)
        parsed = parse_frame(frame)
        assert parsed.type == FRAME_ACK and verify_tag(parsed, KEYS[parsed.device_id])
        self.acks.append((parsed.device_id, parsed.seq))


async def _until(check, what: str) -> None:  # type: ignore[no-untyped-def]
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(what)


@pytest.fixture
async def ingest(registry: Registry, tmp_path: Path):  # type: ignore[no-untyped-def]
    service = IngestService(store=ReportStore(tmp_path / "r.sqlite", gateway_id="gw"),
                            verifier=Verifier(registry, load_policy()), metrics=GatewayMetrics("gw"), batch_ms=20)
    await service.start()
    yield service
    await service.stop()
    service.close()


async def test_acks_go_out_through_send_nowait_without_a_task_each(ingest: IngestService, tmp_path: Path) -> None:
    now = NowaitLink()
    spawned: list[str] = []
    real_spawn = ingest._spawn

    def spawn(coro):  # type: ignore[no-untyped-def]
        spawned.append(getattr(coro, "__name__", "?"))
        real_spawn(coro)

    ingest._spawn = spawn  # type: ignore[method-assign]
    for seq in (1, 2, 3):
        ingest.feed(report_frame("bin-1", seq, KEYS["bin-1"]), now.link)
    ingest.feed(report_frame("bin-2", 1, KEYS["bin-2"]), now.link)
    await _until(lambda: len(now.acks) == 2, "ACKs: %r" % now.acks)
    assert sorted(now.acks) == [("bin-1", 3), ("bin-2", 1)]
    assert "_ack" not in spawned and ReportQueries(tmp_path / "r.sqlite").count_reports() == 4
    # a re-send of a stored report is answered on its own (a handler task), through send_nowait too
    ingest.feed(report_frame("bin-1", 2, KEYS["bin-1"]), now.link)
    await _until(lambda: len(now.acks) == 3, "duplicate not re-acknowledged: %r" % now.acks)
    assert now.acks[-1] == ("bin-1", 3)


async def test_a_failing_write_leaves_the_commit_and_the_next_ack_works(
        ingest: IngestService, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway.pipeline.ingest")
    now = NowaitLink()
    now.raises = [TransportError("board not reading", reason="timeout", link="serial:now"), OSError("pty gone")]
    ingest.feed(report_frame("bin-1", 1, KEYS["bin-1"]), now.link)
    await _until(lambda: ReportQueries(tmp_path / "r.sqlite").count_reports() == 1 and ingest.backlog == 0, "stored")
    ingest.feed(report_frame("bin-1", 1, KEYS["bin-1"]), now.link)  # the device re-sends: the second write fails
    await _until(lambda: not now.raises, "re-send not answered")
    ingest.feed(report_frame("bin-1", 2, KEYS["bin-1"]), now.link)
    await _until(lambda: now.acks == [("bin-1", 2)], "no ACK after the failed writes: %r" % now.acks)
    failed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("ack failed device=bin-1")]
    assert len(failed) == 2 and "board not reading" in failed[0] and "pty gone" in failed[1]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_bug_in_the_link_is_logged_with_its_traceback_and_the_commit_stands(
        ingest: IngestService, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    now = NowaitLink()
    now.raises = [RuntimeError("a bug in the link")]
    ingest.feed(report_frame("bin-1", 1, KEYS["bin-1"]), now.link)
    await _until(lambda: any(r.exc_info for r in caplog.records if r.levelno == logging.ERROR), "bug not logged")
    bug = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(bug) == 1 and "acknowledging bin-1 on serial:now failed" in bug[0].getMessage()
    assert "a bug in the link" in str(bug[0].exc_info[1])  # type: ignore[index]
    assert ReportQueries(tmp_path / "r.sqlite").count_reports() == 1 and ingest.backlog == 0
    assert ingest.store_problem is None  # not a failing commit
    ingest.feed(report_frame("bin-1", 2, KEYS["bin-1"]), now.link)
    await _until(lambda: now.acks == [("bin-1", 2)], "no ACK after the bug: %r" % now.acks)


def test_an_ack_tagged_with_the_key_state_is_the_ack_tagged_with_the_key() -> None:
    key = KEYS["bin-1"]
    state = tag_key(key)
    for seq, body in ((1, {"t": 1796654199}), (2**32 - 1, {})):
        assert build_frame(FRAME_ACK, "bin-1", seq, body, state, 1) == build_frame(FRAME_ACK, "bin-1", seq, body, key, 1)
    # the state is copied per frame, never updated: the next frame's tag is still right
    assert verify_tag(parse_frame(build_frame(FRAME_ACK, "bin-1", 3, {}, state)), key)


async def test_a_bug_building_one_ack_leaves_the_other_acks_of_its_commit(
        ingest: IngestService, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Inline ACKs of one commit go out in turn: one that fails to build (a bug) is logged and the
    others still go out; the commit's handling finishes (stored signalled, nothing left in flight)."""
    now = NowaitLink()
    real = ingest._ack_frame
    broken = {"bin-1"}

    def ack_frame(verified):  # type: ignore[no-untyped-def]
        if verified.frame.device_id in broken:
            broken.clear()
            raise RuntimeError("a bug building an ACK")
        return real(verified)

    ingest._ack_frame = ack_frame  # type: ignore[method-assign]
    ingest.stored.clear()
    ingest.feed(report_frame("bin-1", 1, KEYS["bin-1"]), now.link)
    ingest.feed(report_frame("bin-2", 1, KEYS["bin-2"]), now.link)  # the same batch (batch_ms 20)
    await _until(lambda: now.acks == [("bin-2", 1)] and ingest.backlog == 0, "bin-2 not acknowledged: %r" % now.acks)
    assert ingest.stored.is_set() and ReportQueries(tmp_path / "r.sqlite").count_reports() == 2
    bug = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(bug) == 1 and "acknowledging bin-1 on serial:now failed" in bug[0].getMessage()
    assert "a bug building an ACK" in str(bug[0].exc_info[1])  # type: ignore[index]
    ingest.feed(report_frame("bin-1", 1, KEYS["bin-1"]), now.link)  # the device re-sends: answered now
    await _until(lambda: ("bin-1", 1) in now.acks, "re-send not answered: %r" % now.acks)


async def test_a_backlog_cap_below_batch_max_commits_without_waiting_for_batch_ms(
        registry: Registry, tmp_path: Path) -> None:
    """max_in_flight below batch_max: the queue can never hold a full batch, so once the backlog is at its
    cap the writer commits what waits instead of sleeping out batch_ms each time."""
    service = IngestService(store=ReportStore(tmp_path / "r.sqlite", gateway_id="gw"),
                            verifier=Verifier(registry, load_policy()), metrics=GatewayMetrics("gw"),
                            batch_ms=60_000, batch_max=2000, max_in_flight=10)
    await service.start()
    try:
        now = NowaitLink()
        for seq in range(1, 11):  # the tenth reaches the cap
            service.feed(report_frame("bin-1", seq, KEYS["bin-1"]), now.link)
        assert not service.room.is_set()
        await _until(lambda: now.acks == [("bin-1", 10)], "not committed within 5 s of a 60 s batch_ms")
        assert service.room.is_set() and ReportQueries(tmp_path / "r.sqlite").count_reports() == 10
    finally:
        await service.stop()
        service.close()
