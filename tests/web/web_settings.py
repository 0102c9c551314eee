"""Shared test settings: hypothesis example counts scale up with CIVICEDGE_FULL=1."""

from __future__ import annotations

import os

EXAMPLES = 1000 if os.environ.get("CIVICEDGE_FULL") == "1" else 60
