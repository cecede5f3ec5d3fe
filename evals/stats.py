"""Small statistics for adherence rates: Wilson intervals and the exact McNemar test for paired outcomes."""

from __future__ import annotations

import math


def wilson_ci95(successes: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval for a proportion; well-behaved at 0 and 1, unlike the normal approximation."""
    if n == 0:
        return (0.0, 1.0)
    z = 1.959963984540054
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # at 0 or n successes the bound is exactly 0 or 1; say so instead of carrying float rounding
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return (lo, hi)


def mcnemar_exact(a: list[bool], b: list[bool]) -> float:
    """Two-sided exact McNemar p-value for paired pass/fail outcomes of two arms on the same inputs.

    Only discordant pairs carry information: under the null each is equally likely to favour either arm,
    so their split is Binomial(d, 1/2)."""
    if len(a) != len(b):
        raise ValueError("paired outcomes must have the same length")
    b_only = sum(1 for x, y in zip(a, b) if not x and y)
    a_only = sum(1 for x, y in zip(a, b) if x and not y)
    d = a_only + b_only
    if d == 0:
        return 1.0
    k = min(a_only, b_only)
    tail = sum(math.comb(d, i) for i in range(k + 1)) / 2**d
    return min(1.0, 2 * tail)


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign test of wins against losses (ties dropped): the McNemar test's binomial on counts."""
    d = wins + losses
    if d == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(d, i) for i in range(min(wins, losses) + 1)) / 2**d)
