"""Verification and ingest: frame -> verified report -> batched commit -> ACK."""

from gateway.pipeline.ingest import IngestService, Link
from gateway.pipeline.verify import PolicyGate, Verified, Verifier

__all__ = ["IngestService", "Link", "PolicyGate", "Verified", "Verifier"]
