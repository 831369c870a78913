"""Loading policies and value models from local directories, and seeding.

Why one place: every trainer (GRPO, PPO, DAPO critic) loads models the same way, and the two traps
are easy to fall into: (1) ``AutoTokenizer`` silently replaces our char tokenizer with a byte-level
one on a qwen2 directory, and (2) anything that reaches for the Hub hangs or fails on machines
without internet. Everything here passes ``local_files_only=True``.
"""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from trainers.common.checkpoints import save_model
from trainers.common.model_roots import model_directory
from trainers.common.tiny import build_tiny_model, is_char_tokenizer_dir

VALUE_HEAD_FILE = "value_head.safetensors"
VALUE_HEAD_CONFIG = "value_head.json"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device) so a run can be replayed."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer saved in ``path``: our char tokenizer through ``PreTrainedTokenizerFast``
    (never ``AutoTokenizer``, which swaps it on qwen2 directories), anything else through
    ``AutoTokenizer``. A missing pad token is set to EOS (Llama/Qwen base checkpoints ship
    without one) so batched left-padded generation and training work."""
    path = Path(path)
    if is_char_tokenizer_dir(path):
        tokenizer: PreTrainedTokenizerBase = PreTrainedTokenizerFast.from_pretrained(
            path, local_files_only=True
        )
    else:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"tokenizer in {path} has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def placement_kwargs(device: str | torch.device) -> dict[str, Any]:
    """``from_pretrained`` arguments that load the weights straight onto ``device``.

    Off the CPU that is ``device_map={"": device}``: the checkpoint is read into tensors allocated on
    the GPU, in the requested dtype, with no host copy of the model. transformers needs the small
    ``accelerate`` package for ``device_map``; without it the weights load into host memory in the
    requested dtype (never fp32 for a bf16 model) and are moved once."""
    device = torch.device(device)
    if device.type == "cpu" or importlib.util.find_spec("accelerate") is None:
        return {}
    return {"device_map": {"": device}}


def load_policy(
    path: str | Path, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A causal LM and its tokenizer from a local directory, in ``dtype`` on ``device``, in eval mode.

    The caller switches to train mode when it trains; rollouts and reference log-probs want eval
    (no dropout)."""
    path = Path(path)
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype, local_files_only=True, **placement_kwargs(device)
    )
    model.to(device)  # a no-op when device_map placed it
    model.eval()
    tokenizer = load_tokenizer(path)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


class ValueModel(nn.Module):
    """A transformer backbone (no LM head) with a scalar value head: one value per token.

    Why no LM head: for a real model the vocabulary projection is the largest matmul of the forward
    (150k x hidden per token) and a critic never needs it. The head runs in float32 whatever the
    backbone dtype, so small value differences are not rounded away in bf16.
    """

    def __init__(self, backbone: PreTrainedModel, head: nn.Linear | None = None):
        super().__init__()
        self.backbone = backbone
        hidden = backbone.config.get_text_config().hidden_size
        if head is None:
            head = nn.Linear(hidden, 1, dtype=torch.float32, device=backbone.device)
            # Small init: the critic starts near V=0 rather than at an arbitrary offset.
            nn.init.normal_(head.weight, std=1.0 / (hidden + 1))
            nn.init.zeros_(head.bias)
        self.value_head = head

    @property
    def config(self) -> Any:
        return self.backbone.config

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Values of shape ``(batch, seq)``, float32; the value at position t scores the prefix
        ``input_ids[:, : t + 1]``."""
        if position_ids is None and attention_mask is not None:
            # Left padding: positions count real tokens only, as in generation.
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        out = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        )
        hidden = out.last_hidden_state.to(self.value_head.weight.dtype)
        # under a caller's bf16 autocast the Linear would run in bf16: the value itself stays float32
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            return self.value_head(hidden).squeeze(-1)

    def save_pretrained(self, directory: str | Path, dtype: torch.dtype | None = None) -> Path:
        """Backbone with ``save_pretrained`` (safetensors; in ``dtype`` when given, the live weights
        untouched) and the float32 head in value_head.safetensors beside it, so
        :func:`load_value_model` can restore both."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_model(self.backbone, directory, dtype)
        state = {k: v.detach().to("cpu").contiguous() for k, v in self.value_head.state_dict().items()}
        save_file(state, str(directory / VALUE_HEAD_FILE))
        hidden = self.value_head.in_features
        (directory / VALUE_HEAD_CONFIG).write_text(
            json.dumps({"hidden_size": hidden, "out_features": 1}) + "\n"
        )
        return directory


def load_value_model(
    path: str | Path, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> ValueModel:
    """A value model from ``path``: either a policy checkpoint (a fresh head is initialised, the
    usual way to start a critic from the SFT model) or a directory written by
    :meth:`ValueModel.save_pretrained` (the saved head is restored).

    ``AutoModel`` loads just the backbone: it strips the ``model.`` prefix of a causal-LM checkpoint
    and ignores ``lm_head``."""
    path = Path(path)
    backbone = AutoModel.from_pretrained(path, dtype=dtype, local_files_only=True, **placement_kwargs(device))
    backbone.to(device)  # a no-op when device_map placed it
    backbone.eval()
    model = ValueModel(backbone)
    head_file = path / VALUE_HEAD_FILE
    if head_file.is_file():
        state = load_file(str(head_file), device=str(torch.device(device)))
        model.value_head.load_state_dict({k: v.to(torch.float32) for k, v in state.items()})
    model.value_head.to(device)
    return model


def resolve_model_path(model_path: str, workdir: Path, seed: int) -> Path:
    """The directory of ``model_path``: "tiny" is built (seeded) in ``workdir``; an absolute path is
    used as it is; anything else is a catalogue name under the worker's model roots."""
    if model_path == "tiny":
        target = workdir / "tiny-init"
        if not (target / "config.json").exists():
            build_tiny_model(target, seed=seed)
        return target
    return model_directory(model_path)
