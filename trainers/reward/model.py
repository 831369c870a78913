"""The reward model: a transformer read at the last real token, in two forms, and its checkpoints.

* ``seq_cls``: ``AutoModelForSequenceClassification`` with ``num_labels=1`` (Skywork-Reward's form;
  the checkpoint loads in any Hugging Face stack). We run its backbone and apply its ``score`` layer
  to the hidden state of the last token ourselves instead of calling the model: Hugging Face finds
  that token as the last one that is not ``pad_token_id``, which is wrong when pad == eos (Llama
  base checkpoints) and the response ends with eos. Here the attention mask decides, and left and
  right padding both work.
* ``value_head``: the causal LM's backbone with a float32 scalar head
  (``trainers.common.models.ValueModel``), saved as the backbone plus ``value_head.safetensors``.

A checkpoint directory holds the model (safetensors + config.json, in the training dtype), the
tokenizer and ``reward_model.json`` (the head kind, the max length and the chat template mode used in
training), so that :func:`load_reward_model` needs nothing else.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForSequenceClassification, PreTrainedTokenizerBase

from trainers.common.checkpoints import save_model
from trainers.common.models import VALUE_HEAD_FILE, load_tokenizer, load_value_model, placement_kwargs
from trainers.common.tiny import mark_char_tokenizer

META_FILE = "reward_model.json"


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that count real tokens only (0 for the first real token), for left padding."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real (mask == 1) token of each row, for left or right padding: the argmax
    of position x mask is the rightmost 1. Shape (batch,), int64."""
    positions = torch.arange(attention_mask.shape[-1], device=attention_mask.device)
    return (positions * attention_mask.long()).argmax(-1)


def pool_last(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``hidden[b, last_token_index[b]]``: (batch, seq, ...) -> (batch, ...)."""
    idx = last_token_index(attention_mask)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), idx]


class RewardModel(nn.Module):
    """``forward(input_ids, attention_mask) -> rewards`` of shape (batch,), float32."""

    def __init__(self, inner: nn.Module, head: str):
        super().__init__()
        if head not in ("seq_cls", "value_head"):
            raise ValueError(f"unknown head {head!r}")
        self.inner = inner
        self.head = head
        if head == "seq_cls" and not isinstance(getattr(inner, "score", None), nn.Linear):
            raise ValueError(
                f"{type(inner).__name__} has no `score` layer; use head=value_head for this model"
            )

    @property
    def config(self) -> Any:
        return self.inner.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.head == "value_head":
            values = self.inner(input_ids=input_ids, attention_mask=attention_mask)
            return pool_last(values, attention_mask).float()
        out = self.inner.base_model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids_from_mask(attention_mask),
            use_cache=False,
        )
        pooled = pool_last(out[0], attention_mask)
        return self.inner.score(pooled).squeeze(-1).float()

    def backbone(self) -> nn.Module:
        return self.inner.backbone if self.head == "value_head" else self.inner

    def save(
        self,
        directory: Path,
        tokenizer: PreTrainedTokenizerBase,
        meta: dict[str, Any],
        *,
        char_tokenizer: bool,
        dtype: torch.dtype | None = None,
    ) -> None:
        """Model (safetensors, weights in ``dtype`` when given: the live ones are untouched), tokenizer
        and reward_model.json into ``directory`` (which exists). ``char_tokenizer``: mark the tokenizer
        as ours, so loaders bypass AutoTokenizer."""
        if self.head == "value_head":
            self.inner.save_pretrained(directory, dtype=dtype)  # the backbone in dtype, the head fp32
        else:
            save_model(self.inner, directory, dtype)
        tokenizer.save_pretrained(directory)
        if char_tokenizer:
            mark_char_tokenizer(directory)
        (directory / META_FILE).write_text(json.dumps({"head": self.head, **meta}, indent=2) + "\n")


def _set_attention(model: nn.Module, attn_implementation: str | None) -> None:
    if attn_implementation:
        model.set_attn_implementation(attn_implementation)


def build_reward_model(
    path: str | Path,
    head: str,
    *,
    attn_implementation: str | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> tuple[RewardModel, PreTrainedTokenizerBase]:
    """A reward model from a local directory: a causal LM (the head is new, initialised from the
    current torch RNG state) or a checkpoint of this trainer (the head is restored). The weights load
    in ``dtype`` straight onto ``device`` (trainers.common.models.placement_kwargs)."""
    path = Path(path)
    tokenizer = load_tokenizer(path)
    if head == "value_head":
        inner: nn.Module = load_value_model(path, dtype=dtype, device=device)
        _set_attention(inner.backbone, attn_implementation)
    else:
        kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
        inner = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=1, dtype=dtype, local_files_only=True, **kwargs, **placement_kwargs(device)
        )
        inner.to(device)  # the new score layer, and everything when device_map was not available
    # Hugging Face's own pooling (when the saved model is used elsewhere) needs the pad id.
    inner.config.pad_token_id = tokenizer.pad_token_id
    return RewardModel(inner, head), tokenizer


def read_meta(directory: str | Path) -> dict[str, Any]:
    """reward_model.json of a checkpoint; a directory without one is guessed from its files."""
    directory = Path(directory)
    meta_path = directory / META_FILE
    if meta_path.is_file():
        return json.loads(meta_path.read_text())
    return {"head": "value_head" if (directory / VALUE_HEAD_FILE).is_file() else "seq_cls"}
