"""Benchmarks against a real Docker engine; run one with ``python -m bench.NAME``
from the repository root."""
