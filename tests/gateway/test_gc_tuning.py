"""The gateway process's collector settings: start-up objects frozen, young collections less often, and
cycles made afterwards still collected."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from gateway.gc_tuning import YOUNG_THRESHOLD, tune_collector


@pytest.fixture
def restore_collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


class _Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


def test_start_up_objects_are_frozen_and_young_collections_are_rarer(restore_collector: None) -> None:
    older = gc.get_threshold()[1:]
    loaded = _Node()
    tune_collector()
    assert gc.get_threshold() == (YOUNG_THRESHOLD, *older) and YOUNG_THRESHOLD > 700
    assert gc.get_freeze_count() > 0
    assert not any(obj is loaded for obj in gc.get_objects())  # frozen: no collection walks it


def test_a_cycle_made_after_the_start_is_collected_by_the_young_collections_every_10000_allocations(
        restore_collector: None) -> None:
    tune_collector()  # collects everything first: the young generation starts empty
    node = _Node()
    gone = weakref.ref(node)
    del node
    few = [[] for _ in range(1_000)]  # more than CPython's 700, far fewer than YOUNG_THRESHOLD
    assert gone() is not None  # no young collection yet (at the default threshold there were one or two)
    many = [[] for _ in range(YOUNG_THRESHOLD)]  # allocations alone set off a young collection
    assert gone() is None
    assert len(few) + len(many) > YOUNG_THRESHOLD
