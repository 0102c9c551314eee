"""The ``meta`` rows besides ``schema_version`` that the gateway writes, and their size limits.

A module of constants only, so the web layer (gateway.web.publication) names the published keys
without importing the store.
"""

from __future__ import annotations

# What the public open data published last (``published:entities``, ``published:csv``,
# ``published:repeats``): the only rows the web layer may write (through
# :meth:`gateway.storage.store.ReportStore.save_meta`).
PUBLISHED_META_PREFIX = "published:"
# The longest key and value ReportStore.save_meta writes, in characters.
MAX_META_KEY = 64
MAX_META_VALUE = 8192
