"""Scoring with a trained reward model: ``load_reward_model`` and ``score_pairs``.

The platform scores whole preference datasets with a checkpoint (to filter pairs, as Skywork-Reward's
WildGuard step does, or to compare reward models), so ``score_pairs`` streams: it reads ``rows``
lazily, ``batch_size`` pairs at a time, and yields ``(row id, chosen score, rejected score)`` in input
order. Rows are rendered and truncated exactly as in training (trainers.common.data, the checkpoint's
max_length), and both sides of a batch go through one forward, so the scores are the training
forward's.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trainers.common.data import PreferenceEncoder, PreferenceRow, read_preference_jsonl, row_from_mapping
from trainers.common.precision import inference_precision
from trainers.reward.evaluation import collate
from trainers.reward.model import RewardModel, build_reward_model, read_meta

DEFAULT_MAX_LENGTH = 2048


@dataclass
class LoadedRewardModel:
    model: RewardModel
    tokenizer: Any
    encoder: PreferenceEncoder
    device: torch.device
    meta: dict[str, Any]

    @torch.inference_mode()
    def score(self, rows: list[PreferenceRow]) -> tuple[list[float], list[float]]:
        """(chosen scores, rejected scores) of ``rows``, in one forward."""
        enc = self.encoder.encode(rows)
        ids, mask = collate(enc, list(range(len(enc))), self.tokenizer.pad_token_id, self.device)
        rewards = self.model(ids, mask).float().cpu()
        return rewards[: len(rows)].tolist(), rewards[len(rows) :].tolist()


def load_reward_model(
    checkpoint_dir: str | Path, *, device: str | torch.device | None = None, max_length: int | None = None
) -> LoadedRewardModel:
    """A checkpoint written by the reward trainer (or any directory holding a sequence-classification
    model with num_labels=1 and its tokenizer), in eval mode on ``device`` (default: CUDA if present),
    in bf16 on CUDA and float32 on the CPU. ``max_length`` and the chat template mode default to the ones
    the checkpoint was trained with."""
    checkpoint_dir = Path(checkpoint_dir)
    meta = read_meta(checkpoint_dir)
    dev = (
        torch.device(device)
        if device is not None
        else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    )
    dtype = inference_precision("auto", dev).param_dtype
    model, tokenizer = build_reward_model(checkpoint_dir, meta["head"], dtype=dtype, device=dev)
    model.eval()
    length = max_length or int(meta.get("max_length") or DEFAULT_MAX_LENGTH)
    encoder = PreferenceEncoder(tokenizer, length, meta.get("chat_template"))
    return LoadedRewardModel(model, tokenizer, encoder, dev, meta)


def _as_rows(rows: Iterable[Mapping[str, Any] | PreferenceRow] | str | Path) -> Iterator[PreferenceRow]:
    if isinstance(rows, (str, Path)):
        yield from read_preference_jsonl(rows)
        return
    for i, row in enumerate(rows):
        yield row if isinstance(row, PreferenceRow) else row_from_mapping(row, index=i)


def score_pairs(
    checkpoint_dir: str | Path | LoadedRewardModel,
    rows: Iterable[Mapping[str, Any] | PreferenceRow] | str | Path,
    batch_size: int = 16,
    *,
    device: str | torch.device | None = None,
) -> Iterator[tuple[str, float, float]]:
    """``(id, chosen score, rejected score)`` for every row, in order. ``rows``: exported objects
    ({"id", "prompt", "chosen", "rejected", ...}), PreferenceRows, or the path of a JSONL export."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    loaded = (
        checkpoint_dir
        if isinstance(checkpoint_dir, LoadedRewardModel)
        else load_reward_model(checkpoint_dir, device=device)
    )
    it = _as_rows(rows)
    while batch := list(itertools.islice(it, batch_size)):
        chosen, rejected = loaded.score(batch)
        yield from zip((r.id for r in batch), chosen, rejected, strict=True)
