"""The cyclic garbage collector's settings for a gateway process (``civicedge gateway run``)."""

from __future__ import annotations

import gc

#: Net allocations of container objects between two young-generation collections (CPython's default: 700).
YOUNG_THRESHOLD = 10_000


def tune_collector() -> None:
    """Set the collector for a long-running gateway, once it has started: what is alive then (modules, config,
    policy, the registry and store state loaded at start) is moved out of every later collection
    (``gc.freeze``), and the young generation is collected every :data:`YOUNG_THRESHOLD` net allocations.

    A report allocates some twenty containers that live until its batch commits (up to ``batch_max`` of them
    in flight); at the default threshold a young collection ran every ~35 reports and walked the batch in
    flight, and the older generations walked everything loaded at start: about 3 µs per report, some 5 % of
    the ingest (bench/gateway_ingest.py). Reference counting frees nearly all of a report's objects anyway; the
    collector only finds cycles, and finds those made later as before, only less often (a busy gateway makes
    10,000 allocations in well under a second). A cycle that takes in an object frozen here is never freed,
    nor what it holds: start-up objects are the gateway's own for as long as it runs.
    """
    gc.collect()
    gc.freeze()
    _young, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
