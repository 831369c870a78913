"""vLLM rollout engine for GPU hosts (vLLM 0.32, V1 engine), same interface as ``TorchSampler``.

Why vLLM: on a GPU, paged attention and continuous batching make sampling 16 x 256 long
completions an order of magnitude faster than HF generation; rollouts dominate a GRPO step.

It cannot run on the CPU machines (vLLM links libtorch_cuda; see docs/packaging.md): ``available()``
is False there and ``VllmEngine(...)`` raises. The module imports nothing from vLLM at import time.

Design choices, each matching ``trainers.common.rollout`` semantics:

* **We tokenize, vLLM only samples.** The engine starts with ``skip_tokenizer_init=True`` and gets
  ``{"prompt_token_ids": ...}`` prompts; completion text is decoded with our tokenizer. vLLM would
  load the tokenizer with ``AutoTokenizer``, which swaps our char tokenizer for a byte-level one
  (docs/packaging.md), and token ids are what the trainer needs anyway. Because vLLM then has no
  tokenizer, EOS ids are passed explicitly as ``stop_token_ids``.
* **Log-probs of the sampling distribution.** ``logprobs_mode="processed_logprobs"`` makes vLLM
  report log-probs after temperature / top-k / top-p (the default, ``raw_logprobs``, is before
  temperature), and ``SamplingParams(logprobs=0)`` returns just the sampled token's.
* **Seeds.** Prompt i gets seed ``seed + i * n``; vLLM gives its j-th child ``seed + i * n + j``,
  so every sample has its own stream. ``generation_config="vllm"`` keeps a checkpoint's
  generation_config.json from changing sampling defaults.
* **Weight sync in process.** ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` (set unless the caller set it)
  keeps the engine core in this process, so ``LLM.apply_model`` runs our function on the live
  vLLM module and ``model.load_weights`` copies the trainer's tensors straight into it (vLLM maps HF
  names, fusing q/k/v and gate/up, and skips ``lm_head`` when embeddings are tied). The prefix cache
  is then reset: its KV blocks were computed with the old weights. Tensor parallelism > 1 or an
  engine in another process would need a real transport (NCCL); not supported here.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import GenerationConfig, PreTrainedTokenizerBase

from trainers.common.models import load_tokenizer
from trainers.common.rollout import Completion, Prompts, SamplingConfig, encode_prompts


def _vllm_installed() -> bool:
    if "vllm" in sys.modules:
        return True
    try:
        return importlib.util.find_spec("vllm") is not None
    except (ImportError, ValueError):
        return False


def available() -> bool:
    """True when vLLM is installed and a CUDA device is visible (checked without importing vLLM,
    which fails outright beside a CPU build of torch)."""
    return _vllm_installed() and torch.cuda.is_available()


def _stop_ids(path: Path, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """EOS ids of the tokenizer and of the checkpoint's generation_config.json (if any)."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    try:
        eos = GenerationConfig.from_pretrained(path, local_files_only=True).eos_token_id
    except (OSError, ValueError):
        eos = None
    if isinstance(eos, int):
        ids.add(eos)
    elif isinstance(eos, Iterable):
        ids.update(int(e) for e in eos)
    if not ids:
        raise ValueError(f"no EOS id for {path}: set eos_token in the tokenizer or generation_config.json")
    return ids


def _hf_weights(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """(name, tensor) pairs named as in the HF checkpoint: wrapper prefixes of DDP
    (``module.``) and torch.compile (``_orig_mod.``) are stripped. Under ZeRO-3/FSDP the caller
    must gather full parameters first."""
    out = []
    for name, tensor in model.state_dict().items():
        # strip in any order and nesting (torch.compile of a DDP model gives "_orig_mod.module.")
        stripped = None
        while stripped != name:
            stripped = name
            for prefix in ("module.", "_orig_mod."):
                name = name.removeprefix(prefix)
        out.append((name, tensor.detach()))
    return out


def sampling_params_kwargs(cfg: SamplingConfig, seed: int | None, stops: Iterable[int]) -> dict[str, Any]:
    """Keyword arguments of ``vllm.SamplingParams`` for one prompt (top_k disabled is -1, which
    every vLLM version accepts)."""
    return {
        "n": cfg.n,
        "temperature": cfg.temperature,
        "top_p": cfg.top_p,
        "top_k": cfg.top_k if cfg.top_k > 0 else -1,
        "max_tokens": cfg.max_new_tokens,
        "logprobs": 0,
        "seed": seed,
        "stop_token_ids": sorted(stops),
        "detokenize": False,
    }


def completions_from_outputs(
    outputs: Sequence[Any],
    prompt_ids: Sequence[Sequence[int]],
    tokenizer: PreTrainedTokenizerBase,
    stops: set[int],
    n: int,
) -> list[list[Completion]]:
    """vLLM ``RequestOutput``s (one per prompt, in prompt order) to grouped :class:`Completion`s.

    ``truncated`` follows our definition (``max_new_tokens`` reached and the last token is not a
    stop token) rather than vLLM's finish_reason alone, which says "length" when the EOS lands
    exactly on the last allowed token."""
    if len(outputs) != len(prompt_ids):
        raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(prompt_ids)} prompts")
    groups: list[list[Completion]] = []
    for ids, request in zip(prompt_ids, outputs, strict=True):
        samples = sorted(request.outputs, key=lambda o: o.index)
        if len(samples) != n:
            raise RuntimeError(f"vLLM returned {len(samples)} samples for a prompt, expected {n}")
        group = []
        for sample in samples:
            if sample.finish_reason not in ("stop", "length"):
                raise RuntimeError(f"vLLM request ended with finish_reason={sample.finish_reason!r}")
            tokens = [int(t) for t in sample.token_ids]
            if sample.logprobs is None:
                logprobs = [math.nan] * len(tokens)
            else:
                logprobs = [float(pos[tok].logprob) for pos, tok in zip(sample.logprobs, tokens, strict=True)]
            stopped = bool(tokens) and tokens[-1] in stops
            truncated = not stopped and sample.finish_reason == "length"
            group.append(
                Completion(
                    prompt_ids=list(ids),
                    completion_ids=tokens,
                    completion_text=tokenizer.decode(tokens, skip_special_tokens=True),
                    logprobs=logprobs,
                    truncated=truncated,
                    finish_reason="length" if truncated else "stop",
                )
            )
        groups.append(group)
    return groups


class VllmEngine:
    """``RolloutEngine`` on ``vllm.LLM`` (single GPU, tensor parallel 1).

    ``model_path`` is a local HF checkpoint directory (for the tiny model, what
    ``build_tiny_model`` wrote). Extra keyword arguments go to ``vllm.LLM`` unchanged (e.g.
    ``max_model_len``, ``enforce_eager``, ``enable_sleep_mode``).
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        tokenizer: PreTrainedTokenizerBase | None = None,
        dtype: str | torch.dtype = "bfloat16",
        gpu_memory_utilization: float = 0.5,
        enable_prefix_caching: bool = True,
        seed: int = 0,
        **llm_kwargs: Any,
    ):
        if not available():
            raise RuntimeError(
                "VllmEngine needs vllm and a CUDA device (install the [gpu] extra into a fresh "
                "virtualenv on a GPU host); use trainers.common.rollout.TorchSampler on the CPU"
            )
        if llm_kwargs.get("tensor_parallel_size", 1) != 1:
            raise ValueError("VllmEngine syncs weights in process and supports tensor_parallel_size=1 only")
        # Must be set before the engine starts: keeps EngineCore in this process (see module doc).
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        self.in_process = os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
        vllm = importlib.import_module("vllm")
        self._vllm = vllm
        self.model_path = Path(model_path)
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(self.model_path)
        self.stop_ids = _stop_ids(self.model_path, self.tokenizer)
        self.enable_prefix_caching = enable_prefix_caching
        self.llm = vllm.LLM(
            model=str(self.model_path),
            skip_tokenizer_init=True,
            dtype=dtype,
            gpu_memory_utilization=gpu_memory_utilization,
            enable_prefix_caching=enable_prefix_caching,
            seed=seed,
            logprobs_mode="processed_logprobs",
            generation_config="vllm",
            **llm_kwargs,
        )

    def generate(
        self,
        prompts: Prompts,
        *,
        n: int = 1,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        max_new_tokens: int = 256,
        seed: int | None = None,
    ) -> list[list[Completion]]:
        cfg = SamplingConfig(
            n=n, temperature=temperature, top_p=top_p, top_k=top_k, max_new_tokens=max_new_tokens
        )
        prompt_ids = encode_prompts(self.tokenizer, prompts)
        params = [
            self._vllm.SamplingParams(
                **sampling_params_kwargs(cfg, None if seed is None else seed + i * cfg.n, self.stop_ids)
            )
            for i in range(len(prompt_ids))
        ]
        requests = [{"prompt_token_ids": list(ids)} for ids in prompt_ids]
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        return completions_from_outputs(outputs, prompt_ids, self.tokenizer, self.stop_ids, cfg.n)

    def sync_weights(self, model: nn.Module) -> None:
        """Copy ``model``'s parameters (an HF causal LM of the same architecture) into the engine,
        then drop prefix-cache blocks computed with the old weights."""
        if not self.in_process:
            raise RuntimeError(
                "sync_weights needs the vLLM engine core in this process: construct VllmEngine "
                "with VLLM_ENABLE_V1_MULTIPROCESSING unset or 0"
            )
        weights = _hf_weights(model)

        def load(vllm_model: nn.Module) -> None:
            vllm_model.load_weights(iter(weights))

        self.llm.apply_model(load)
        if self.enable_prefix_caching:
            self.llm.reset_prefix_cache()
