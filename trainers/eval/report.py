"""An evaluation's honest numbers from its verdicts (issue 15 point 5): what ``trainers.eval.core.evaluate``
adds to its metrics and protocol. The estimators and the bootstrap are ``trainers.eval.estimators``.

Answer classes for maj@k come from the verifier: a sample's key is the answer it extracted, normalised
as the verifier compares answers before anything else (math: whitespace and $ dropped, as its exact-match
step does; code: the program with whitespace runs collapsed); a sample without an extracted answer
abstains. Correct samples are one class (each equals the reference). Two wrong answers the verifier would
only find equal through math_verify's symbolic comparison (0.5 and 1/2) count as two classes."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from trainers.eval.estimators import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, answer_counts, estimate

ESTIMATORS_VERSION = "orlab-estimators-1 (pass@k Chen, pass^k, maj@k exact over size-k subsets, ties 1/t)"


def default_ks(n: int) -> list[int]:
    """1, 2, 4, ... up to n, and n itself."""
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    return [*ks, n]


def answer_key(domain: str, verdict) -> str | None:
    """The sample's canonical answer (module docstring); None: no answer (does not vote)."""
    answer = getattr(verdict, "answer", None)
    if answer is None or verdict.verdict == "no_answer":
        return None
    if domain == "math":
        return "".join(answer.split()).strip("$").removeprefix("\\displaystyle")
    return " ".join(answer.split())


def honest_metrics(
    domains: Sequence[str],
    verdicts: Sequence,
    n: int,
    ks: Sequence[int] | None = None,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[dict, dict]:
    """(metrics, protocol fields) for problems with ``n`` verdicts each (problem-major, ``domains`` one
    per problem): avg@n, pass@k, pass^k, maj@k for k in ``ks`` (default ``default_ks(n)``; a k above n
    is refused), each with ``<name>_ci`` = [lo, hi], the bootstrap 95 % interval over problems."""
    ks = sorted(set(ks)) if ks else default_ks(n)
    problems = []
    for i, domain in enumerate(domains):
        v = verdicts[i * n : (i + 1) * n]
        problems.append(answer_counts([x.correct for x in v], [answer_key(domain, x) for x in v]))
    metrics = estimate(problems, ks, resamples=resamples, seed=seed) if problems else {}
    protocol = {
        "n": n,
        "ks": ks,
        "estimators": ESTIMATORS_VERSION,
        "interval": {"level": 0.95, "method": "percentile bootstrap over problems", "resamples": resamples,
                     "seed": seed},
    }  # fmt: skip
    return metrics, protocol


def scalars(metrics: dict) -> dict[str, float]:
    """The metrics without their intervals (what goes into a run's scalar series)."""
    return {k: v for k, v in metrics.items() if not isinstance(v, list | tuple)}


def template_hash(engine) -> str:
    """sha256 (first 12 hex) of the chat template the prompts were rendered with ("none": raw text)."""
    mode = getattr(engine, "mode", "none")
    if mode == "none":
        text = ""
    elif mode == "auto":
        text = getattr(getattr(engine, "tokenizer", None), "chat_template", None) or ""
        if not isinstance(text, str):
            text = repr(text)
    else:
        text = mode
    return hashlib.sha256(text.encode()).hexdigest()[:12]
