"""The RL sample record (issue 14): the dict a trainer hands ``Sink.log_samples`` for one rollout.

Field names are the platform's (webapp.runs.samples ingests them; unknown keys land in ``extra``):

* ``prompt`` (the text the model read), ``completion``, ``reward`` (the total), ``rewards`` (by reward
  function), ``advantage``, ``verdict``, ``extracted_answer``, ``expected_answer``, ``data_source``,
  ``length`` (completion tokens, a final EOS included), ``truncated``, ``finish_reason`` ("stop",
  "length" or "error");
* ``group_index`` (which group of the step: the prompt's position among the step's prompts, or the
  evaluation problem's), ``member_index`` (the completion's position in its group), ``phase`` ("train" or
  "eval"), ``checkpoint_step`` (evaluations of a saved checkpoint), ``group_status`` ("kept",
  "zero_variance", "solved_all", "unsolved_all": what the trainer's own filter decided);
* ``tokens`` (optional, a sampled subset): ``offsets`` (the character offset in ``completion`` where each
  completion token starts), ``logprobs`` and ``entropies`` (the trainer's, at the rollout temperature)
  and ``engine_logprobs`` (only where a separate rollout engine, vLLM, reported its own).

Nothing here imports torch: the helpers take plain lists."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal

from pydantic import Field

GROUP_STATUSES = ("kept", "zero_variance", "solved_all", "unsolved_all")
FINISH_REASONS = ("stop", "length", "error")
#: an extracted answer or expected answer longer than this is cut (a code answer is the whole program)
MAX_ANSWER_CHARS = 500
#: tokens of left context when a completion's tokens are decoded piece by piece (enough for a split
#: UTF-8 character, at most 4 byte tokens, and a SentencePiece word's leading space)
_DECODE_WINDOW = 8

GroupCount = int | Literal["all"]
#: a config field's type: a number of groups (>= 0) or "all"
GroupCountField = Annotated[int, Field(ge=0)] | Literal["all"]
OnSamples = Callable[[list[dict[str, Any]]], None]


def check_group_count(value: Any) -> Any:
    """A config validator's body: one error naming the field (the union would report each branch)."""
    if value == "all" or (type(value) is int and value >= 0):
        return value
    raise ValueError("must be an integer >= 0, or 'all'")


def groups_to_log(setting: GroupCount, groups: int) -> int:
    """How many of a step's ``groups`` a ``*_groups_per_step`` setting (an int >= 0 or "all") logs."""
    return groups if setting == "all" else max(0, min(int(setting), groups))


def group_status(rewards: Sequence[float], kept: bool) -> str:
    """Why a group was kept or filtered: "kept" when the trainer trained on it, else the reason its
    rewards carry no signal: all correct ("solved_all", reward >= 1), all wrong ("unsolved_all",
    reward <= 0), or all equal otherwise ("zero_variance")."""
    if kept:
        return "kept"
    if rewards and all(r >= 1.0 for r in rewards):
        return "solved_all"
    if rewards and all(r <= 0.0 for r in rewards):
        return "unsolved_all"
    return "zero_variance"


def finish_reason(reason: str | None) -> str:
    """The engine's finish reason in the platform's words ("stop" / "length"; anything else, e.g. vLLM's
    "abort", is "error")."""
    return reason if reason in ("stop", "length") else "error"


def expected_answer(reference: Any, domain: str = "math") -> str:
    """A problem's reference as text: the answer (several acceptable ones joined by " | "), or for code
    a count of its tests (the tests themselves stay out of the sample record)."""
    if domain == "code":
        n = len(reference) if isinstance(reference, list | tuple) else 0
        return f"{n} tests"
    if isinstance(reference, list | tuple):
        return " | ".join(str(r) for r in reference)[:MAX_ANSWER_CHARS]
    return "" if reference is None else str(reference)[:MAX_ANSWER_CHARS]


def token_offsets(tokenizer: Any, ids: Sequence[int], text: str) -> list[int]:
    """The character offset in ``text`` (the completion decoded without special tokens) where each of
    ``ids`` starts. Non-decreasing, within ``[0, len(text)]``; a token that adds no character of its own
    (EOS, the later bytes of a character split over byte tokens) starts where the next character does.

    Each token is decoded alone (one batched call); a run of tokens that decode to a replacement
    character (a character split over byte tokens) is decoded as a run, its characters given to the
    tokens that complete them. When the pieces then do not join up to ``text`` (a SentencePiece
    tokenizer drops a lone token's leading space), each token's width is read with ``_DECODE_WINDOW``
    tokens of left context instead."""
    ids = [int(t) for t in ids]
    if not ids:
        return []
    pieces = tokenizer.batch_decode([[t] for t in ids], skip_special_tokens=True)
    widths = [len(p) for p in pieces]
    i = 0
    while i < len(ids):  # runs of partial characters (byte-level BPE)
        if "\ufffd" not in pieces[i]:
            i += 1
            continue
        j = i
        while j < len(ids) and "\ufffd" in pieces[j]:
            j += 1
        prefixes = tokenizer.batch_decode([ids[i : t + 1] for t in range(i, j)], skip_special_tokens=True)
        done = 0  # characters of the run complete so far
        for t, prefix in zip(range(i, j), prefixes, strict=True):
            complete = len(prefix.rstrip("\ufffd")) if t < j - 1 else len(prefix)
            widths[t], done = max(0, complete - done), max(done, complete)
            pieces[t] = ""
        pieces[i] = prefixes[-1]  # the run's text, for the check below
        i = j
    if "".join(pieces) != text or sum(widths) != len(text):
        windows = []
        for i in range(len(ids)):
            lo = max(0, i - _DECODE_WINDOW)
            windows += [ids[lo:i], ids[lo : i + 1]]
        decoded = tokenizer.batch_decode(windows, skip_special_tokens=True)
        widths = [max(0, len(decoded[2 * i + 1]) - len(decoded[2 * i])) for i in range(len(ids))]
    out, at = [], 0
    for w in widths:
        out.append(min(at, len(text)))
        at += w
    return out


def rollout_sample(
    *,
    prompt: str,
    completion: str,
    length: int,
    truncated: bool,
    finish: str | None,
    verdict: Any,
    domain: str,
    reference: Any,
    data_source: str,
    group_index: int,
    member_index: int,
    phase: str,
    advantage: float | None = None,
    status: str | None = None,
    checkpoint_step: int | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One rollout in the platform's sample format. ``verdict`` is a trainers.common.rewards.Verdict
    (its reward is the total and the one reward function's component)."""
    answer = verdict.answer if verdict.answer is not None else ""
    row: dict[str, Any] = {
        "prompt": prompt,
        "completion": completion,
        "reward": float(verdict.reward),
        "rewards": {f"{domain}_verifier": float(verdict.reward)},
        "verdict": verdict.verdict,
        "extracted_answer": str(answer)[:MAX_ANSWER_CHARS],
        "expected_answer": expected_answer(reference, domain),
        "data_source": data_source,
        "length": int(length),
        "truncated": bool(truncated),
        "finish_reason": finish_reason(finish),
        "group_index": int(group_index),
        "member_index": int(member_index),
        "phase": phase,
    }
    if advantage is not None:
        row["advantage"] = float(advantage)
    if status is not None:
        row["group_status"] = status
    if checkpoint_step is not None:
        row["checkpoint_step"] = int(checkpoint_step)
    if extra:
        row.update(extra)
    return row


def token_arrays(
    offsets: list[int],
    logprobs: Sequence[float] | None = None,
    entropies: Sequence[float] | None = None,
    engine_logprobs: Sequence[float] | None = None,
) -> dict[str, list]:
    """The ``tokens`` field: one value per completion token in each array present."""
    out: dict[str, list] = {"offsets": list(offsets)}
    for name, values in (
        ("logprobs", logprobs),
        ("entropies", entropies),
        ("engine_logprobs", engine_logprobs),
    ):
        if values is not None:
            if len(values) != len(offsets):
                raise ValueError(f"tokens.{name}: {len(values)} values for {len(offsets)} tokens")
            out[name] = [round(float(v), 4) for v in values]
    return out
