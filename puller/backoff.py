"""Exponential backoff, shared by every retry in puller (pure)."""

from __future__ import annotations


def next_backoff(attempts: int, now: float, low: float, high: float) -> float:
    """When to try again after ``attempts`` failures in a row: low, 2·low, 4·low … capped at high."""
    return now + min(high, low * (2 ** max(0, attempts - 1)))
