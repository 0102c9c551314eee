"""Fixtures of the field-tool tests."""

from __future__ import annotations

import asyncio
import os
from typing import Awaitable, Callable, Iterator

import pytest

CliRun = Callable[..., Awaitable[tuple[int, str]]]


@pytest.fixture
def silent_pty() -> Iterator[str]:
    """A pty with nothing behind it: opens fine, never answers."""
    master, slave = os.openpty()
    try:
        yield os.ttyname(slave)
    finally:
        os.close(master)
        os.close(slave)


@pytest.fixture
def civicedge_cli(capsys: pytest.CaptureFixture[str]) -> CliRun:
    """``await run("provision", ...)``: the ``civicedge`` command in a thread (a virtual board's host
    goes on running on the loop); returns the exit code and the output, white space collapsed."""
    from hil.cli.main import main as civicedge_main

    async def run(*args: str) -> tuple[int, str]:
        capsys.readouterr()
        rc = await asyncio.to_thread(civicedge_main, list(args))
        captured = capsys.readouterr()
        return rc, " ".join((captured.out + captured.err).split())

    return run
