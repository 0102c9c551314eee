"""Running the real ``civicedge`` CLI from an async field test (the board's ptys stay served)."""

from __future__ import annotations

import asyncio
import sys


async def civicedge(*args: str, timeout_s: float = 90.0) -> tuple[int, str]:
    """Run the real CLI in a process while this event loop keeps serving the board's ptys."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "hil.cli.main", *args,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")
