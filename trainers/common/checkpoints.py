"""Checkpoint files every trainer writes the same way (issue 10, point 11).

A checkpoint directory holds:

* the model as a ``save_pretrained`` directory (safetensors + config.json + tokenizer), in the
  training dtype: a bf16 run writes bf16 weights, loadable by vLLM and transformers as they are.
  The torch engine trains fp32 master weights under bf16 autocast; :func:`save_model` casts a copy
  of the state dict on the fly, so the live weights (and the optimizer that owns them) stay fp32;
* ``optimizer.pt`` (optional, ``save_optimizer``): tensors and numbers only (the optimizer's and a
  scheduler's state dicts, the RNG state, and the fp32 master weights when the model was saved in
  bf16), read back with ``torch.load(weights_only=True)`` so a checkpoint cannot run code when
  loaded;
* ``trainer_state.json``: the small bookkeeping a resume needs (step, kind, data geometry), plain JSON.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from trainers.common.tiny import mark_char_tokenizer

OPTIMIZER_FILE = "optimizer.pt"
STATE_FILE = "trainer_state.json"

_DTYPE_NAMES = {torch.bfloat16: "bfloat16", torch.float16: "float16", torch.float32: "float32"}


def cast_state_dict(module: torch.nn.Module, dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """``module.state_dict()`` with floating tensors cast to ``dtype`` on the CPU (None: unchanged).

    Tensors that share storage (tied embeddings) stay shared in the copy, so ``save_pretrained``
    still recognises and drops the tied duplicate. A tensor already in ``dtype`` on the CPU is not
    copied."""
    out: dict[str, torch.Tensor] = {}
    done: dict[tuple[int, int, tuple[int, ...]], torch.Tensor] = {}
    for name, tensor in module.state_dict().items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if key not in done:
            target = dtype if dtype is not None and tensor.is_floating_point() else tensor.dtype
            done[key] = tensor.detach().to(device="cpu", dtype=target)
        out[name] = done[key]
    return out


def _write_config_dtype(directory: Path, dtype: torch.dtype) -> None:
    """``save_pretrained`` records the live parameters' dtype in config.json; record the saved one
    (vLLM and ``dtype="auto"`` loads read it). transformers 5 names the key ``dtype``, 4.x
    ``torch_dtype``: rewrite whichever was written."""
    path = directory / "config.json"
    if not path.is_file():
        return
    config = json.loads(path.read_text())
    keys = [k for k in ("dtype", "torch_dtype") if k in config] or ["dtype"]
    for key in keys:
        config[key] = _DTYPE_NAMES.get(dtype, str(dtype).removeprefix("torch."))
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def save_model(model: Any, directory: str | Path, dtype: torch.dtype | None = None) -> Path:
    """``model.save_pretrained(directory)`` with the weights in ``dtype`` (None: as they are held)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if dtype is None:
        model.save_pretrained(directory)
        return directory
    model.save_pretrained(directory, state_dict=cast_state_dict(model, dtype))
    _write_config_dtype(directory, dtype)
    return directory


def save_policy(
    sink: Any,
    step: int,
    model: Any,
    tokenizer: Any,
    char_tokenizer: bool,
    dtype: torch.dtype | None = None,
) -> Path:
    """A loadable policy directory (weights in ``dtype``, config, tokenizer) for checkpoint ``step``
    in ``sink.checkpoint_dir(step)``; returns it. The caller adds its own state and records it."""
    return write_policy(Path(sink.checkpoint_dir(step)), model, tokenizer, char_tokenizer, dtype)


def write_policy(
    directory: Path, model: Any, tokenizer: Any, char_tokenizer: bool, dtype: torch.dtype | None = None
) -> Path:
    """The files of a loadable policy directory in ``directory``: what save_policy writes, for a caller
    that already has the folder (several ranks agree on it first, and rank 0 alone writes)."""
    save_model(model, directory, dtype)
    tokenizer.save_pretrained(directory)
    if char_tokenizer:
        mark_char_tokenizer(directory)  # so load_policy keeps the char tokenizer (see models.py)
    return directory


def save_optimizer_state(
    directory: str | Path,
    optimizer: torch.optim.Optimizer,
    *,
    master: torch.nn.Module | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """optimizer.pt: the optimizer's state dict, ``extra`` (a scheduler's state dict, RNG tensors,
    numbers) and, when ``master`` is given, its float32 weights. A model saved in bf16 loses the low
    bits of its fp32 master weights; keeping them here (as DeepSpeed's bf16 optimizer checkpoint
    does) makes a resume exact."""
    state: dict[str, Any] = {"optimizer": optimizer.state_dict(), **(extra or {})}
    if master is not None:
        state["master_weights"] = {k: v.detach().to("cpu") for k, v in master.state_dict().items()}
    path = Path(directory) / OPTIMIZER_FILE
    torch.save(state, path)
    return path


def load_optimizer_state(
    directory: str | Path,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    master: torch.nn.Module | None = None,
    map_location: Any = "cpu",
) -> dict[str, Any] | None:
    """Read optimizer.pt (``weights_only=True``: tensors and plain containers only), load it into
    ``optimizer`` and the saved master weights into ``master`` (each when given), and return the
    whole payload for the caller's extras. None when the checkpoint has no optimizer state
    (``save_optimizer: false``): the caller starts a fresh optimizer."""
    path = Path(directory) / OPTIMIZER_FILE
    if not path.is_file():
        return None
    state = torch.load(path, map_location=map_location, weights_only=True)
    if master is not None and "master_weights" in state:
        master.load_state_dict(state["master_weights"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    return state


def write_trainer_state(directory: str | Path, state: Mapping[str, Any]) -> Path:
    """trainer_state.json: plain JSON bookkeeping (step, kind, data geometry, ...)."""
    path = Path(directory) / STATE_FILE
    path.write_text(json.dumps(dict(state), indent=2, sort_keys=True) + "\n")
    return path


def read_trainer_state(directory: str | Path) -> dict[str, Any] | None:
    """trainer_state.json of a checkpoint, or None when it has none."""
    path = Path(directory) / STATE_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())
