"""Python side of the Node simulator host (``hil/sim/host.mjs``): process, requests, events.

One :class:`SimHost` is one Node process running one or many boards on one virtual clock. The
wire format (JSON lines over the process's stdin/stdout) is documented in ``docs/simulator.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
from typing import Any, Callable

from hil.sim import SIM_DIR
from hil.sim.errors import SimHostError, SimTimeoutError
from hil.sim.runtime import node_command

logger = logging.getLogger(__name__)

EventHandler = Callable[[dict[str, Any]], None]
START_TIMEOUT_S = 30.0  # for the host's first message (hello)


def describe_status(status: int | None) -> str:
    """An exit status for people: "status 1", "status -9 (killed by SIGKILL)", "status unknown"."""
    if status is None:
        return "status unknown"
    text = f"status {status}"
    if status < 0:
        try:
            text += f" (killed by {signal.Signals(-status).name})"
        except ValueError:
            text += f" (killed by signal {-status})"
    return text


class SimHost:
    """A Node process hosting virtual boards.

    Args:
        speed: virtual seconds per wall second; 0 runs as fast as possible (the clock jumps to
            the next timer, but runs at wall rate while a board that was typed at waits at its
            REPL for console input: docs/simulator.md); None pauses the clock (advance it with
            :meth:`advance`).
        start_ms: virtual unix time (ms) at start; None: the wall clock now.
    """

    def __init__(self, *, speed: float | None = 1.0, start_ms: int | None = None) -> None:
        self.speed = speed
        self.start_ms = start_ms
        self.proc: asyncio.subprocess.Process | None = None
        self._handlers: dict[str, EventHandler] = {}
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._rid = 0
        self._reader: asyncio.Task[None] | None = None
        self._stderr_task: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()

    @property
    def pid(self) -> int | None:
        """Process id of the Node host (None before start)."""
        return None if self.proc is None else self.proc.pid

    async def start(self) -> None:
        """Start the Node process.

        Raises:
            SimHostError: Node or the simulator packages are missing, or the host did not come up.
        """
        try:
            node = node_command()  # node, and the resolve hook when the runtime is not in hil/sim
        except Exception as exc:
            raise SimHostError(str(exc)) from exc
        start = self.start_ms if self.start_ms is not None else int(time.time() * 1000)
        speed = -1 if self.speed is None else self.speed
        self.proc = await asyncio.create_subprocess_exec(
            *node, "--max-old-space-size=8192", str(SIM_DIR / "host.mjs"), "--start", str(start), "--speed", str(speed),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            cwd=str(SIM_DIR), limit=64 * 1024 * 1024, start_new_session=True)
        hello: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

        def on_hello(ev: dict[str, Any]) -> None:
            if not hello.done():
                hello.set_result(ev)

        self._handlers["hello"] = on_hello
        self._reader = asyncio.create_task(self._read_loop())
        self._stderr_task = asyncio.create_task(self._stderr_loop())
        # The host's output closing (it crashed or was killed) ends the wait at once, not after 30 s.
        ended: asyncio.Future[Any] = asyncio.ensure_future(self.closed.wait())
        try:
            await asyncio.wait({hello, ended}, timeout=START_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.cancel()
        if hello.done():
            return
        proc = self.proc
        assert proc is not None
        if self.closed.is_set():
            try:  # its output closed: the kernel reports the exit status at once, or very soon
                status: int | None = await asyncio.wait_for(proc.wait(), 5)
            except asyncio.TimeoutError:
                status = None
            if self._stderr_task is not None:  # what it said on stderr (Node's error) is logged before we raise
                with contextlib.suppress(asyncio.TimeoutError, Exception):
                    await asyncio.wait_for(asyncio.shield(self._stderr_task), 1)
            await self.close()
            raise SimHostError(f"simulator host (pid {proc.pid}) exited while starting, "
                               f"{describe_status(status)} (its stderr, if any, is logged above)",
                               pid=proc.pid, status=status)
        await self.close()
        raise SimHostError(f"simulator host (pid {proc.pid}) did not start within {START_TIMEOUT_S:g} s",
                           pid=proc.pid, timeout_s=START_TIMEOUT_S)

    @property
    def running(self) -> bool:
        """True while the Node process runs: started, not ended and its output still open.

        When a host is killed its output closes before the exit status is collected
        (``proc.returncode`` may still be None for a while): a request sent then is never answered.
        """
        return self.proc is not None and self.proc.returncode is None and not self.closed.is_set()

    def on_event(self, board: str, handler: EventHandler) -> None:
        """Route events of ``board`` to ``handler``."""
        self._handlers[board] = handler

    def send(self, msg: dict[str, Any]) -> None:
        """Send a message without waiting for a reply."""
        if not self.running or self.proc is None or self.proc.stdin is None:
            raise SimHostError("simulator host is not running", op=msg.get("op"))
        self.proc.stdin.write(json.dumps(msg, separators=(",", ":")).encode() + b"\n")

    async def request(self, msg: dict[str, Any], timeout_s: float = 60.0) -> dict[str, Any]:
        """Send ``msg`` and wait for its reply.

        Raises:
            SimHostError: the host rejected the request or died.
            SimTimeoutError: no reply within ``timeout_s``.
        """
        self._rid += 1
        rid = self._rid
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        self.send({**msg, "rid": rid})
        try:
            reply = await asyncio.wait_for(fut, timeout_s)
        except asyncio.TimeoutError as exc:
            raise SimTimeoutError(f"simulator host did not answer {msg.get('op')!r} in {timeout_s} s",
                                  op=msg.get("op"), timeout_s=timeout_s) from exc
        finally:
            self._pending.pop(rid, None)
        if "error" in reply:
            raise SimHostError(f"simulator host: {reply['error']}", op=msg.get("op"), board=msg.get("board"),
                               error=reply["error"])
        return reply

    async def advance(self, ms: int, *, chunk_ms: int = 1000, timeout_s: float = 600.0) -> int:
        """Advance the virtual clock by ``ms`` (timers fire in order); returns the new virtual time."""
        reply = await self.request({"op": "advance", "ms": int(ms), "chunk": int(chunk_ms)}, timeout_s)
        return int(reply["now"])

    async def set_speed(self, speed: float | None) -> None:
        """Change the clock speed (0: as fast as possible, None: paused)."""
        await self.request({"op": "clock", "speed": -1 if speed is None else speed})
        self.speed = speed

    async def hold_at(self, virtual_ms: int | None) -> None:
        """Stop the free-running clock at ``virtual_ms`` (timers due then still fire); None: no limit.

        The clock waits there (whatever the speed) until the hold is moved or lifted; ``advance``
        is not limited. A scenario holds its boards at its end so none takes a reading past it.
        """
        await self.request({"op": "clock", "hold_at": None if virtual_ms is None else int(virtual_ms)})

    async def set_boot_wait(self, wall_ms: int) -> None:
        """Bound the wall time a paused clock's ``advance`` waits for one board's boots (per advance;
        default 60000; 0: never wait, a boot then costs the virtual time it takes)."""
        await self.request({"op": "clock", "boot_wait_ms": int(wall_ms)})

    async def ping(self) -> dict[str, Any]:
        """Return ``{"now", "rss", "boards"}`` of the host process."""
        return await self.request({"op": "ping"})

    async def _read_loop(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        try:
            while line := await self.proc.stdout.readline():
                try:
                    ev = json.loads(line)
                except ValueError:
                    logger.warning("simulator host sent a bad line: %r", line[:200])
                    continue
                self._dispatch(ev)
        finally:
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_result({"error": "simulator host exited"})
            self.closed.set()

    def _dispatch(self, ev: dict[str, Any]) -> None:
        kind = ev.get("ev")
        if kind == "reply":
            fut = self._pending.get(ev.get("rid", -1))
            if fut is not None and not fut.done():
                fut.set_result(ev)
            return
        key = str(ev.get("board", kind))
        handler = self._handlers.get(key)
        if handler is not None:
            try:
                handler(ev)
            except Exception:  # a broken listener must not stop the host's event stream
                logger.exception("event handler for %s failed", key)

    async def _stderr_loop(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            logger.warning("%s", line.decode(errors="replace").rstrip())

    async def close(self) -> None:
        """Stop the Node process (graceful, then killed) and wait for it."""
        proc = self.proc
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(Exception):
                self.send({"op": "shutdown"})
            with contextlib.suppress(Exception):  # end of input also when the request could not be sent
                if proc.stdin is not None:
                    proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
        for task in (self._reader, self._stderr_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self.proc = None
