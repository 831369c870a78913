"""Preference pairs: read the platform's JSONL export, render each side, tokenize, truncate, pad.

The export has one object per line, ``{"id", "prompt", "chosen", "rejected", "chosen_text",
"rejected_text", "source"}``. ``chosen`` and ``rejected`` are either response strings (then
``prompt`` is the user turn) or whole conversations ``[{role, content}, ...]`` that end with the
assistant's response (then the conversation carries the prompt, and ``prompt`` is ignored).

Rendering (one text per side):

* with a chat template: the conversation, or ``[user: prompt, assistant: response]``, through
  ``apply_chat_template``, tokenized WITHOUT the tokenizer's own special tokens;
* without one: ``"prompt\\n\\nresponse"`` (earlier turns joined by blank lines), tokenized with them.

Which one is a trainer config's ``chat_template`` (trainers.common.chat): ``auto`` = the tokenizer's
template (an error when it has none), ``none`` = plain text, or a Jinja template string. Without a mode
(checkpoints written before the setting existed) the tokenizer's template is used when it has one.

Either way the result starts with exactly one BOS when the tokenizer or the template uses one:
Skywork-Reward found Llama/Gemma templates that write BOS plus tokenizers that add one, a double BOS
that shifts every reward (seeds-spec 3.1).

Truncation keeps the END: a side longer than ``max_length`` loses tokens from the left, after the
BOS, so the prompt goes first and the last token, where the reward is read, is always kept.
:func:`length_stats` reports the lengths and how often this happened.

Only ``tokenizers``-level work happens here (no torch, except :func:`pad_batch`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainers.common.chat import check_mode

Message = dict[str, str]
Side = str | list[Message]


class DataError(ValueError):
    """A row of a preference file that cannot be used (the message names the file and line)."""


@dataclass(frozen=True)
class PreferenceRow:
    id: str
    prompt: str | list[Message]
    chosen: Side
    rejected: Side
    source: str = ""


def _check_conversation(value: Any, what: str) -> list[Message]:
    if not value:
        raise DataError(f"{what} is an empty conversation")
    messages = []
    for i, m in enumerate(value):
        if (
            not isinstance(m, Mapping)
            or not isinstance(m.get("content"), str)
            or not isinstance(m.get("role"), str)
        ):
            raise DataError(f"{what}[{i}] must be an object with string 'role' and 'content'")
        messages.append({"role": m["role"], "content": m["content"]})
    return messages


def row_from_mapping(obj: Mapping[str, Any], index: int = 0) -> PreferenceRow:
    """A row from one exported object; ``id`` defaults to the line index, ``source`` to ""."""
    if not isinstance(obj, Mapping):
        raise DataError(f"row {index} is a {type(obj).__name__}, not an object")
    sides = {}
    for key in ("chosen", "rejected"):
        value = obj.get(key)
        if isinstance(value, str):
            sides[key] = value
        elif isinstance(value, list):
            messages = _check_conversation(value, key)
            if messages[-1]["role"] != "assistant":
                raise DataError(
                    f"{key} must end with the assistant's response, ends with {messages[-1]['role']!r}"
                )
            sides[key] = messages
        else:
            raise DataError(f"'{key}' must be a string or a list of messages, got {type(value).__name__}")
    prompt = obj.get("prompt") or ""
    if isinstance(prompt, list):
        prompt = _check_conversation(prompt, "prompt")
    elif not isinstance(prompt, str):
        raise DataError(f"'prompt' must be a string or a list of messages, got {type(prompt).__name__}")
    row_id = obj.get("id")
    return PreferenceRow(
        id=str(index if row_id is None else row_id),
        prompt=prompt,
        chosen=sides["chosen"],
        rejected=sides["rejected"],
        source=str(obj.get("source") or ""),
    )


def read_preference_jsonl(path: str | Path) -> list[PreferenceRow]:
    """Every row of an exported preference file (blank lines skipped)."""
    path = Path(path)
    rows = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rows.append(row_from_mapping(json.loads(line), index=len(rows)))
            except (json.JSONDecodeError, DataError) as exc:
                raise DataError(f"{path}:{lineno}: {exc}") from None
    if not rows:
        raise DataError(f"{path}: no preference pairs")
    return rows


def to_messages(prompt: str | list[Message], response: Side) -> list[Message]:
    """The conversation of one side: a conversation as it is, else the prompt turn(s) + the response."""
    if isinstance(response, list):
        return response
    turns = (
        list(prompt)
        if isinstance(prompt, list)
        else ([{"role": "user", "content": prompt}] if prompt else [])
    )
    return [*turns, {"role": "assistant", "content": response}]


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render(tokenizer: Any, messages: list[Message], mode: str | None = None) -> tuple[str, str]:
    """(full text, prompt part) of one conversation. The prompt part is what precedes the response
    (with a template: the earlier turns plus the generation prompt); it only serves to count how many
    tokens of a truncated side belonged to the response. ``mode``: see the module docstring."""
    if mode is None:
        mode = "auto" if has_chat_template(tokenizer) else "none"
    if mode != "none":
        extra = {} if mode == "auto" else {"chat_template": mode}
        full = tokenizer.apply_chat_template(messages, tokenize=False, **extra)
        prefix = (
            tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True, **extra)
            if len(messages) > 1
            else ""
        )
        return full, prefix
    prompt = "\n\n".join(m["content"] for m in messages[:-1])
    response = messages[-1]["content"]
    return (f"{prompt}\n\n{response}" if prompt else response), (f"{prompt}\n\n" if prompt else "")


@dataclass
class EncodedPairs:
    """Token ids of both sides of every pair, truncated, plus the bookkeeping of the truncation."""

    ids: list[str]
    sources: list[str]
    chosen: list[list[int]]
    rejected: list[list[int]]
    chosen_full_len: list[int]  # before truncation
    rejected_full_len: list[int]
    truncated: list[bool]  # either side lost tokens
    response_truncated: list[bool]  # either side lost response tokens, not just prompt tokens

    def __len__(self) -> int:
        return len(self.ids)


class PreferenceEncoder:
    """Renders and tokenizes pairs for one tokenizer, ``max_length`` and ``chat_template`` mode (None:
    the tokenizer's template when it has one, else plain text)."""

    def __init__(self, tokenizer: Any, max_length: int, chat_template: str | None = None):
        if max_length < 2:
            raise ValueError("max_length must be >= 2")
        if chat_template is not None:
            check_mode(tokenizer, chat_template)
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.mode = chat_template or ("auto" if has_chat_template(tokenizer) else "none")
        self.templated = self.mode != "none"
        self.bos_id = tokenizer.bos_token_id
        # Does plain tokenization start with BOS? (Llama/Gemma: yes; Qwen and our char tokenizer: no.)
        probe = tokenizer("a", add_special_tokens=True)["input_ids"]
        self.adds_bos = self.bos_id is not None and bool(probe) and probe[0] == self.bos_id

    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        # A template writes its own special tokens; plain text gets the tokenizer's.
        return self.tokenizer(texts, add_special_tokens=not self.templated)["input_ids"]

    def _one_bos(self, ids: list[int]) -> list[int]:
        if self.bos_id is None:
            return ids
        start = 0
        while start < len(ids) and ids[start] == self.bos_id:
            start += 1
        if start or self.adds_bos:
            return [self.bos_id, *ids[start:]]
        return ids

    def _truncate(self, ids: list[int]) -> list[int]:
        if len(ids) <= self.max_length:
            return ids
        if self.bos_id is not None and ids and ids[0] == self.bos_id:
            return [ids[0], *ids[len(ids) - self.max_length + 1 :]]
        return ids[len(ids) - self.max_length :]

    def encode_texts(
        self, fulls: list[str], prompts: list[str]
    ) -> tuple[list[list[int]], list[int], list[bool], list[bool]]:
        """(truncated ids, untruncated lengths, truncated?, response truncated?) of rendered texts."""
        full_ids = [self._one_bos(ids) for ids in self._tokenize(fulls)]
        prompt_ids = [
            self._one_bos(ids) if p else [] for p, ids in zip(prompts, self._tokenize(prompts), strict=True)
        ]
        out, lengths, cut, response_cut = [], [], [], []
        for ids, pids in zip(full_ids, prompt_ids, strict=True):
            common = 0  # the prompt's tokens are a prefix of the full text's, up to merges at the seam
            for a, b in zip(ids, pids, strict=False):
                if a != b:
                    break
                common += 1
            kept = self._truncate(ids)
            lengths.append(len(ids))
            cut.append(len(kept) < len(ids))
            has_bos = bool(kept) and self.bos_id is not None and kept[0] == self.bos_id
            response_len = len(ids) - max(common, 1 if has_bos else 0)
            response_cut.append(response_len > len(kept) - (1 if has_bos else 0))
            out.append(kept)
        return out, lengths, cut, response_cut

    def encode(self, rows: Sequence[PreferenceRow]) -> EncodedPairs:
        rendered = {
            side: [render(self.tokenizer, to_messages(r.prompt, getattr(r, side)), self.mode) for r in rows]
            for side in ("chosen", "rejected")
        }
        enc = {}
        for side, pairs in rendered.items():
            enc[side] = self.encode_texts([f for f, _ in pairs], [p for _, p in pairs])
        (c_ids, c_len, c_cut, c_rcut), (r_ids, r_len, r_cut, r_rcut) = enc["chosen"], enc["rejected"]
        return EncodedPairs(
            ids=[r.id for r in rows],
            sources=[r.source for r in rows],
            chosen=c_ids,
            rejected=r_ids,
            chosen_full_len=c_len,
            rejected_full_len=r_len,
            truncated=[a or b for a, b in zip(c_cut, r_cut, strict=True)],
            response_truncated=[a or b for a, b in zip(c_rcut, r_rcut, strict=True)],
        )


def length_stats(enc: EncodedPairs, indices: Iterable[int] | None = None) -> dict[str, float]:
    """Mean token lengths (after truncation) and truncation rates over ``indices`` (default: all).

    A pair counts as truncated when either side lost tokens; ``response_truncated_ratio`` counts the
    pairs where that reached into a response (the prompt alone did not absorb it)."""
    idx = list(range(len(enc))) if indices is None else list(indices)
    n = max(len(idx), 1)
    return {
        "chosen_len_mean": sum(len(enc.chosen[i]) for i in idx) / n,
        "rejected_len_mean": sum(len(enc.rejected[i]) for i in idx) / n,
        "truncated_ratio": sum(enc.truncated[i] for i in idx) / n,
        "response_truncated_ratio": sum(enc.response_truncated[i] for i in idx) / n,
    }


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int, side: str = "right"):
    """(input_ids, attention_mask) as int64 tensors of shape (len(seqs), longest)."""
    import torch

    longest = max(len(s) for s in seqs)
    input_ids = torch.full((len(seqs), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), longest), dtype=torch.long)
    for i, s in enumerate(seqs):
        n = len(s)
        if side == "right":
            input_ids[i, :n] = torch.as_tensor(s, dtype=torch.long)
            mask[i, :n] = 1
        else:
            input_ids[i, longest - n :] = torch.as_tensor(s, dtype=torch.long)
            mask[i, longest - n :] = 1
    return input_ids, mask
