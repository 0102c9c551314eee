"""Fixtures of the field-tool tests."""

from __future__ import annotations

import os
from typing import Iterator

import pytest


@pytest.fixture
def silent_pty() -> Iterator[str]:
    """A pty with nothing behind it: opens fine, never answers."""
    master, slave = os.openpty()
    try:
        yield os.ttyname(slave)
    finally:
        os.close(master)
        os.close(slave)
