"""On-device privacy: exact integer discrete Laplace noise, noisy release with k-suppression,
and a persisted per-day epsilon ledger. No floats anywhere in this package (a test enforces it).
"""
