"""trainers.eval.estimators (issue 15 point 5): pass@k, pass^k and maj@k against exact enumeration of
every size-k subset on small cases, edge cases, and the coverage of the bootstrap intervals. No Django."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import numpy as np
import pytest

from trainers.eval.estimators import (
    ProblemCounts,
    answer_counts,
    bootstrap_ci,
    estimate,
    maj_at_k,
    pass_at_k,
    pass_at_k_all,
    pass_hat_k,
)

CORRECT = "<correct>"


def labels(counts: ProblemCounts) -> list:
    """One label per sample: CORRECT, a wrong answer's key ("w0", "w1", ...), or None (no answer)."""
    out = [CORRECT] * counts.c
    for i, w in enumerate(counts.wrong):
        out += [f"w{i}"] * w
    return out + [None] * counts.abstain


def vote(subset: tuple) -> float:
    """The majority vote's expected correctness on one subset, written independently of the estimator:
    abstentions do not vote, no vote is wrong, a t-way tie at the top is won by each with chance 1/t."""
    votes = Counter(x for x in subset if x is not None)
    if not votes:
        return 0.0
    top = max(votes.values())
    winners = [a for a, v in votes.items() if v == top]
    return winners.count(CORRECT) / len(winners)


def enumerate_all(counts: ProblemCounts, k: int) -> tuple[float, float, float]:
    """(pass@k, pass^k, maj@k) as the mean over all C(n, k) subsets of sample positions."""
    samples = labels(counts)
    subsets = list(itertools.combinations(samples, k))
    assert len(subsets) == math.comb(counts.n, k)
    at = sum(CORRECT in s for s in subsets) / len(subsets)
    hat = sum(all(x == CORRECT for x in s) for s in subsets) / len(subsets)
    maj = sum(vote(s) for s in subsets) / len(subsets)
    return at, hat, maj


# answer patterns with n <= 8: ties between the correct class and one or several wrong ones, a wrong
# majority, abstentions, all correct, none correct, singletons
PATTERNS = [
    ProblemCounts(1, (1,), 0),
    ProblemCounts(2, (2,), 0),
    ProblemCounts(2, (2, 2), 0),
    ProblemCounts(3, (3,), 2),
    ProblemCounts(2, (3, 1), 1),
    ProblemCounts(1, (1, 1, 1, 1), 2),
    ProblemCounts(4, (2, 1), 1),
    ProblemCounts(2, (2, 2, 2), 0),
    ProblemCounts(1, (5,), 2),
    ProblemCounts(3, (), 5),
    ProblemCounts(8, (), 0),
    ProblemCounts(0, (4, 2), 2),
    ProblemCounts(0, (), 8),
    ProblemCounts(5, (1, 1, 1), 0),
    ProblemCounts(4, (4,), 0),
]


@pytest.mark.parametrize(
    "counts", PATTERNS, ids=lambda p: f"c{p.c}w{'-'.join(map(str, p.wrong))}a{p.abstain}"
)
def test_estimators_equal_enumeration_over_subsets(counts):
    for k in range(1, counts.n + 1):
        at, hat, maj = enumerate_all(counts, k)
        assert pass_at_k(counts.n, counts.c, k) == pytest.approx(at, abs=1e-12), k
        assert pass_hat_k(counts.n, counts.c, k) == pytest.approx(hat, abs=1e-12), k
        assert maj_at_k(counts, k) == pytest.approx(maj, abs=1e-12), k
    assert pass_at_k_all(counts.n, counts.c) == pytest.approx(
        [enumerate_all(counts, k)[0] for k in range(1, counts.n + 1)]
    )


def test_ties_split_evenly():
    # 2 correct vs 2 of one wrong answer, k = 4: the one subset is a 2-2 tie -> 1/2
    assert maj_at_k(ProblemCounts(2, (2,)), 4) == pytest.approx(0.5)
    # three-way tie 1-1-1 at k = 3 with abstentions elsewhere
    assert maj_at_k(ProblemCounts(1, (1, 1)), 3) == pytest.approx(1 / 3)


def test_edge_cases():
    # c = 0: nothing can be correct
    for k in (1, 3, 5):
        assert pass_at_k(5, 0, k) == 0.0
        assert pass_hat_k(5, 0, k) == 0.0
        assert maj_at_k(ProblemCounts(0, (3,), 2), k) == 0.0
    # c = n: everything is
    for k in (1, 3, 5):
        assert pass_at_k(5, 5, k) == 1.0
        assert pass_hat_k(5, 5, k) == 1.0
        assert maj_at_k(ProblemCounts(5), k) == pytest.approx(1.0)
    # k = n: the whole set, no randomness left
    assert pass_at_k(6, 1, 6) == 1.0
    assert pass_hat_k(6, 5, 6) == 0.0
    assert maj_at_k(ProblemCounts(3, (2,), 1), 6) == 1.0
    assert maj_at_k(ProblemCounts(2, (3,), 1), 6) == 0.0
    # all abstain: no vote, wrong
    assert maj_at_k(ProblemCounts(0, (), 4), 2) == 0.0
    # k > n (and k < 1) refused
    with pytest.raises(ValueError, match="k=5 > n=4"):
        pass_at_k(4, 2, 5)
    with pytest.raises(ValueError, match="k=5 > n=4"):
        pass_hat_k(4, 2, 5)
    with pytest.raises(ValueError, match="k=5 > n=4"):
        maj_at_k(ProblemCounts(2, (2,)), 5)
    with pytest.raises(ValueError, match="k=9 > n=8"):
        estimate([ProblemCounts(4, (4,))], [1, 9])
    with pytest.raises(ValueError, match="positive"):
        pass_at_k(4, 2, 0)


def test_answer_counts_group_by_the_verifiers_key():
    # correct samples are one class whatever their text; wrong ones group by key; None abstains
    counts = answer_counts(
        [True, True, False, False, False, False, False],
        ["1/2", "0.5", "3", "3", "4", None, None],
    )
    assert counts == ProblemCounts(2, (2, 1), 2)
    assert counts.n == 7
    with pytest.raises(ValueError):
        answer_counts([True], ["a", "b"])


def test_maj_at_k_large_n_is_a_probability():
    # n = 64 with many classes (the size evaluations use): finite, in [0, 1], monotone cases
    counts = ProblemCounts(20, (15, 10, 5, 3, 3, 2, 1, 1, 1, 1), 2)
    assert counts.n == 64
    values = [maj_at_k(counts, k) for k in (1, 2, 4, 8, 16, 32, 64)]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert values[0] == pytest.approx(20 / 64)  # one sample: correct w.p. c / n (an abstention is wrong)
    assert values[-1] == 1.0  # the whole set: 20 correct beat 15


def true_maj(dist: np.ndarray, k: int) -> float:
    """maj@k of k independent draws from a problem's answer distribution (index 0 correct, the last
    one no answer, the rest wrong answers), by enumerating every sequence of k draws."""
    total = 0.0
    for seq in itertools.product(range(len(dist)), repeat=k):
        prob = float(np.prod(dist[list(seq)]))
        subset = tuple(CORRECT if i == 0 else (None if i == len(dist) - 1 else f"w{i}") for i in seq)
        total += prob * vote(subset)
    return total


def test_bootstrap_intervals_cover_the_truth():
    """200 fixed-seed simulated evaluations. The population: 30 problem types, each an answer
    distribution (correct, three wrong answers, no answer) drawn once; a benchmark draws 60 problems
    uniformly from the types, and 8 samples per problem. The true value of a metric is its expectation
    over that population for k fresh samples: mean over types of 1-(1-p)^k (pass@k), p^k (pass^k), p
    (avg), and the majority vote's expected correctness over k independent draws (maj@k). Every
    estimator is unbiased for it, so the 95 % percentile intervals should cover it about 95 % of the
    time: the test asks 90-99 % for each metric."""
    rng = np.random.default_rng(2026)
    types = []
    for _ in range(30):
        p = rng.beta(0.8, 1.2)
        none = 0.15 * (1 - p) * rng.random()
        wrong = rng.dirichlet([1.0, 0.6, 0.4]) * (1 - p - none)
        types.append(np.array([p, *wrong, none]))
    ks = [2, 4]
    truth = {"avg@8": np.mean([t[0] for t in types])}
    for k in ks:
        truth[f"pass@{k}"] = np.mean([1 - (1 - t[0]) ** k for t in types])
        truth[f"pass^{k}"] = np.mean([t[0] ** k for t in types])
        truth[f"maj@{k}"] = np.mean([true_maj(t, k) for t in types])
    covered = Counter()
    sims = 200
    for sim in range(sims):
        problems = []
        for t in rng.integers(0, len(types), size=60):
            draws = rng.choice(len(types[t]), size=8, p=types[t])
            keys = [None if d == len(types[t]) - 1 else int(d) for d in draws]
            problems.append(answer_counts([d == 0 for d in draws], keys))
        est = estimate(problems, ks, seed=sim)
        for name, value in truth.items():
            lo, hi = est[f"{name}_ci"]
            assert lo <= est[name] <= hi
            covered[name] += lo <= value <= hi
    rates = {name: covered[name] / sims for name in truth}
    assert all(0.90 <= r <= 0.99 for r in rates.values()), rates


def test_bootstrap_is_reproducible_and_shaped():
    values = np.linspace(0, 1, 50)
    a = bootstrap_ci(values, seed=3)
    assert a == bootstrap_ci(values, seed=3)
    assert a[0] < values.mean() < a[1]
    lo, hi = bootstrap_ci(np.stack([values, values * 0.5], axis=1))
    assert lo.shape == hi.shape == (2,)
    assert np.all(lo < hi)
    # a constant metric has a zero-width interval
    assert bootstrap_ci(np.ones(10)) == (1.0, 1.0)
