"""Honest evaluation numbers (issue 15 point 5): per-problem estimators from n samples, and bootstrap
intervals over problems. Pure numpy, no Django, no verifier: the caller passes what the verifier said.

A problem's result is its n samples' correctness and, per sample, a canonical answer key (``answer_counts``):
samples whose keys are equal gave the same answer; a key of None means no answer was extracted (the sample
abstains from a vote). Every correct sample equals the reference, so the correct samples form one answer
class whatever their keys; the wrong samples form one class per key. A problem is then summarised by
(c, the wrong classes' sizes, a): c correct, a abstaining, n = c + sum(wrong) + a.

Estimators, each for one problem and a k with 1 <= k <= n (k > n is refused: there are not k samples);
the benchmark's number is the mean over problems. Each is the expectation over a uniformly random
size-k subset of the n samples, so it is an unbiased estimate of the quantity for k fresh samples:

* ``pass@k`` (Chen et al. 2021): P(at least one of the k is correct) = 1 - C(n-c, k) / C(n, k).
* ``pass^k``: P(all k are correct) = C(c, k) / C(n, k).
* ``avg@n``: c / n, the mean correctness (= pass@1 = the expected correctness of one sample).
* ``maj@k``: the expected correctness of a majority vote over the k samples' answers. The vote goes to
  the answer class with the most members among the k (abstentions do not vote); a subset with no vote
  at all is wrong; a tie between t classes at the top is broken uniformly at random, so a subset where
  the correct class ties with t - 1 wrong ones counts 1/t (the expectation of "take the first most
  common answer" over the order the samples came in). Computed exactly by combinatorics over the class
  sizes (``maj_at_k``), not by sampling: with j of the k samples correct (1 <= j <= min(c, k)), every
  wrong class of size >= j may contribute 0..j samples (j makes a tie), while the abstentions and the
  wrong classes smaller than j can never reach j and are pooled; a dynamic program over the large classes
  counts the subsets by (samples drawn, classes tied), weighted by C(size, drawn). Float arithmetic:
  exact to rounding for n up to ~1,000.

Intervals (``bootstrap_ci``): the percentile bootstrap over problems: B resamples of the problems with
replacement (fixed seed, B = 1,000 by default), the mean of each resample, and the 2.5 % / 97.5 %
quantiles of those means. They express the uncertainty from the finite set of problems and the finite
samples per problem together (each problem's estimate carries its own sampling noise)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "ProblemCounts",
    "answer_counts",
    "avg",
    "bootstrap_ci",
    "estimate",
    "maj_at_k",
    "pass_at_k",
    "pass_at_k_all",
    "pass_hat_k",
]

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class ProblemCounts:
    """One problem's n samples as answer classes: c correct, ``wrong`` the sizes of the wrong answer
    classes (largest first), ``abstain`` samples without an answer."""

    c: int
    wrong: tuple[int, ...] = ()
    abstain: int = 0

    def __post_init__(self) -> None:
        if self.c < 0 or self.abstain < 0 or any(w <= 0 for w in self.wrong):
            raise ValueError("counts must be >= 0 (wrong classes >= 1)")
        object.__setattr__(self, "wrong", tuple(sorted(self.wrong, reverse=True)))

    @property
    def n(self) -> int:
        return self.c + sum(self.wrong) + self.abstain


def answer_counts(correct: Sequence[bool], keys: Sequence[Hashable | None]) -> ProblemCounts:
    """A problem's samples (correctness and canonical answer key of each) as answer classes (module
    docstring): the correct samples are one class; wrong samples group by key; key None abstains."""
    if len(correct) != len(keys):
        raise ValueError(f"{len(correct)} correctness flags but {len(keys)} answer keys")
    c = sum(1 for ok in correct if ok)
    wrong = Counter(key for ok, key in zip(correct, keys, strict=True) if not ok and key is not None)
    abstain = sum(1 for ok, key in zip(correct, keys, strict=True) if not ok and key is None)
    return ProblemCounts(c, tuple(wrong.values()), abstain)


def _check(n: int, k: int) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if k > n:
        raise ValueError(f"k={k} > n={n}: an estimate over k samples needs at least k samples")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): 1 - C(n-c, k) / C(n, k), as a stable product."""
    _check(n, k)
    if not 0 <= c <= n:
        raise ValueError(f"c={c} outside 0..n={n}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def pass_at_k_all(n: int, c: int) -> np.ndarray:
    """pass@k for every k = 1..n (index k - 1)."""
    return np.array([pass_at_k(n, c, k) for k in range(1, n + 1)])


def pass_hat_k(n: int, c: int, k: int) -> float:
    """pass^k: the probability that all k samples of a random size-k subset are correct, C(c,k)/C(n,k)."""
    _check(n, k)
    if not 0 <= c <= n:
        raise ValueError(f"c={c} outside 0..n={n}")
    if c < k:
        return 0.0
    prod = 1.0
    for i in range(k):
        prod *= (c - i) / (n - i)
    return prod


def avg(n: int, c: int) -> float:
    """Mean correctness c / n."""
    if n < 1 or not 0 <= c <= n:
        raise ValueError(f"need n >= 1 and 0 <= c <= n, got n={n}, c={c}")
    return c / n


@lru_cache(maxsize=65536)
def _maj(c: int, wrong: tuple[int, ...], abstain: int, k: int) -> float:
    n = c + sum(wrong) + abstain
    total = 0.0
    for j in range(1, min(c, k) + 1):
        rest = k - j  # samples drawn outside the correct class
        big = [w for w in wrong if w >= j]
        free = abstain + sum(w for w in wrong if w < j)
        ties = min(len(big), rest // j)
        # dp[s, t]: weighted number of ways the big classes give s samples with t of them at j (tied)
        dp = np.zeros((rest + 1, ties + 1))
        dp[0, 0] = 1.0
        for w in big:
            new = np.zeros_like(dp)
            for x in range(min(j - 1, w, rest) + 1):
                new[x:, :] += math.comb(w, x) * dp[: rest + 1 - x, :]
            if j <= rest and ties:
                new[j:, 1:] += math.comb(w, j) * dp[: rest + 1 - j, :-1]
            dp = new
        s = np.arange(rest + 1)
        free_ways = np.array([float(math.comb(free, int(rest - x))) for x in s])
        share = 1.0 / (1.0 + np.arange(ties + 1))  # the correct class wins a t+1-way tie 1/(t+1) of times
        total += math.comb(c, j) * float(free_ways @ dp @ share)
    return total / math.comb(n, k)


def maj_at_k(counts: ProblemCounts, k: int) -> float:
    """Expected correctness of the majority vote over a uniformly random size-k subset of the problem's
    samples (module docstring: abstentions do not vote, no vote is wrong, ties split uniformly)."""
    _check(counts.n, k)
    if counts.c == 0:
        return 0.0
    return _maj(counts.c, counts.wrong, counts.abstain, k)


def bootstrap_ci(
    values: np.ndarray,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = 0.95,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of the mean over problems. ``values``: (problems,) or (problems,
    metrics); returns (lo, hi) of shape () or (metrics,). Each resample draws problems' indices with
    replacement; all metrics share the same resamples."""
    v = np.asarray(values, dtype=float)
    one = v.ndim == 1
    v = v.reshape(len(v), -1)
    p = len(v)
    if p == 0:
        raise ValueError("no problems to resample")
    rng = np.random.default_rng(seed)
    means = np.empty((resamples, v.shape[1]))
    chunk = max(1, 4_000_000 // (p * v.shape[1]))  # bounded memory for large benchmarks
    for start in range(0, resamples, chunk):
        b = min(chunk, resamples - start)
        means[start : start + b] = v[rng.integers(0, p, size=(b, p))].mean(axis=1)
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha], axis=0)
    return (lo[0], hi[0]) if one else (lo, hi)


def estimate(
    problems: Iterable[ProblemCounts],
    ks: Iterable[int],
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = 0.95,
    majority: bool = True,
) -> dict[str, float | list[float]]:
    """The benchmark's numbers: ``avg@n`` and, for each k in ``ks``, ``pass@k``, ``pass^k`` and (with
    ``majority``) ``maj@k``, each the mean over problems, with ``<name>_ci`` = [lo, hi] its bootstrap
    interval. n is the smallest sample count of any problem (every problem has n in an evaluation); a
    k above it is refused."""
    probs = list(problems)
    if not probs:
        raise ValueError("no problems")
    n = min(p.n for p in probs)
    ks = sorted(set(ks))
    for k in ks:
        _check(n, k)
    names = [f"avg@{max(p.n for p in probs)}"]
    cols = [[avg(p.n, p.c) for p in probs]]
    for k in ks:
        names.append(f"pass@{k}")
        cols.append([pass_at_k(p.n, p.c, k) for p in probs])
    for k in ks:
        names.append(f"pass^{k}")
        cols.append([pass_hat_k(p.n, p.c, k) for p in probs])
    if majority:
        for k in ks:
            names.append(f"maj@{k}")
            cols.append([maj_at_k(p, k) for p in probs])
    values = np.array(cols).T  # problems x metrics
    lo, hi = bootstrap_ci(values, resamples=resamples, seed=seed, level=level)
    out: dict[str, float | list[float]] = {}
    for i, name in enumerate(names):
        out[name] = float(values[:, i].mean())
        out[f"{name}_ci"] = [float(lo[i]), float(hi[i])]
    return out
