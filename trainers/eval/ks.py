"""The k values of an evaluation's pass@k / pass^k / maj@k (issue 15 point 6): a config field shared by
the RL and DAPO eval sections, checked against the samples per problem (k <= n: the unbiased
estimators need at least k samples; trainers.eval.report refuses more)."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

MAX_KS = 32


def ks_field():
    return Field(
        default_factory=list,
        max_length=MAX_KS,
        description="k values of pass@k, pass^k and maj@k, each from 1 to k (the samples per problem); "
        "empty: 1, 2, 4, ... k",
    )


def checked_ks(ks: Sequence[int], n: int) -> list[int]:
    """``ks`` sorted without repeats; a ValueError names a k outside 1..n."""
    bad = [k for k in ks if not 1 <= k <= n]
    if bad:
        raise ValueError(f"every k must be from 1 to k = {n} (samples per problem), got {bad[0]}")
    return sorted(set(ks))
