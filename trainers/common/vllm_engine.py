"""vLLM rollout engine for GPU hosts (vLLM 0.32, V1 engine), colocated with training; same interface
as ``TorchSampler``.

**Has never run on a GPU in orlab's tests**: no GPU host available to this project has vLLM (its wheel
is far too large to bring), so the engine is kept a thin layer over vLLM's documented RL hooks and
its pure helpers (bucketing, context length, seeding, output conversion) are tested on the CPU; the
GPU test in tests/trainers/test_vllm_engine.py is skipped wherever vLLM is absent.

Why vLLM: on a GPU, paged attention and continuous batching make sampling 16 x 8k-token completions
per prompt far faster than HF generation, and rollouts dominate a GRPO step.

It cannot run on the CPU machines (vLLM links libtorch_cuda; /work/shared/docs/packaging.md):
``available()`` is False there and ``VllmEngine(...)`` raises. Nothing of vLLM is imported at
module import time.

Design, with the sources read for each choice (vllm 0.32 = vllm-project/vllm ``vllm/entrypoints/
llm.py``; TRL = huggingface/trl f2cd577 ``trl/generation/vllm_generation.py``, its colocate mode;
verl = volcengine/verl b178a3c ``verl/workers/fsdp_workers.py`` and ``verl/workers/rollout/
vllm_rollout/vllm_rollout.py``):

* **Colocated, asleep between rollouts.** ``LLM(enable_sleep_mode=True)``; after every ``generate``
  the engine calls ``LLM.sleep(level=1)`` (weights copied to host memory, KV cache discarded; vLLM's
  ``sleep`` also resets the prefix cache), so the update that follows gets that GPU memory. Before
  a weight sync only ``wake_up(tags=["weights"])``; the KV cache is woken
  (``wake_up(tags=["kv_cache"])``) only when sampling starts: verl's order (resume weights, update,
  resume kv_cache), so the trainer's tensors, the sync buckets and the KV cache never coexist.
  ``torch.cuda.empty_cache()`` runs before each wake-up so the trainer's cached free blocks are
  returned first (TRL: "required to avoid OOM in some cases").
  Level 1, not TRL's/verl's level 2: level 2 discards the weights, so any wake-up not followed by a
  full sync samples from garbage (vllm issue 29341, TRL's ``reload_weights`` workaround; vllm PR
  54235 calls it a "silent-garbage footgun"), and DAPO samples pi_ref batch after batch without a
  sync. The price of level 1 is one bf16 copy of the weights in host memory and a host<->GPU copy of
  them per sleep/wake.
* **We tokenize, vLLM only samples.** ``skip_tokenizer_init=True`` and ``{"prompt_token_ids": ...}``
  prompts; completion text is decoded with our tokenizer (vLLM would load the tokenizer with
  ``AutoTokenizer``, which swaps the tiny model's char tokenizer). EOS ids are passed as
  ``stop_token_ids``.
* **Log-probs of the sampling distribution.** ``logprobs_mode="processed_logprobs"`` (after
  temperature and top-k/top-p; the default ``raw_logprobs`` is before temperature) and
  ``SamplingParams(logprobs=0)``: only the sampled token's log-prob comes back, into
  ``Completion.logprobs``, for the rollout-vs-trainer log-prob gap (TRL passes the same two).
* **Seeded once per batch, never per request.** A request with its own ``seed`` gets a private
  generator, and vLLM's sampler then draws that request's noise one request at a time in Python
  (``vllm/v1/sample/ops/topk_topp_sampler.py``: ``random_sample`` "can be slow because we handle
  each request one by one"; the FlashInfer path also falls back for it). So ``SamplingParams`` carry
  no seed; before each batch the device generator the sampler draws from is seeded with
  ``batch_seed(seed, rank)`` through ``LLM.collective_rpc``. Consequence: a vLLM rollout is
  reproducible only as a whole batch (same prompts in the same order, same seed, same vLLM build and
  GPU); one prompt's samples depend on the rest of the batch and on the world size, unlike the
  torch sampler, whose samples are a pure function of (seed, prompt key, sample index).
  ``prompt_keys`` are accepted for the interface and ignored.
* **Weight sync in process, in bf16 buckets.** ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` (set unless the
  caller set it) keeps the engine core in this process, so ``LLM.apply_model`` runs our function on
  the live vLLM module and its ``load_weights`` copies the trainer's tensors in (vLLM maps HF names,
  fusing q/k/v and gate/up, and skips ``lm_head`` when embeddings are tied) -- TRL's colocate path
  calls the same ``model.load_weights`` through ``llm.llm_engine.model_executor.driver_worker``;
  ``apply_model`` is the public route to it. Tensors are cast to the engine dtype one bucket at a
  time (:func:`weight_buckets`, as verl fills its transfer buckets), so a step never holds a full
  converted copy of the model. Under ZeRO-3 the caller gathers the parameters around
  ``sync_weights``. Quantized checkpoints (which need ``process_weights_after_loading`` again) are
  not supported.
* **Several ranks.** When torch.distributed runs with more than one process, every rank builds its own
  engine on its own GPU with ``distributed_executor_backend="external_launcher"`` (TRL's colocate
  mode); tensor parallelism stays 1.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import math
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import GenerationConfig, PreTrainedTokenizerBase

from trainers.common.models import load_tokenizer
from trainers.common.rollout import Completion, Prompts, SamplingConfig, encode_prompts

#: The sleep level used between rollouts (see the module docstring for why not 2).
SLEEP_LEVEL = 1
WEIGHTS, KV_CACHE = "weights", "kv_cache"
#: TRL's colocate default (GRPOConfig.vllm_gpu_memory_utilization = 0.3): vLLM's weights, KV cache and
#: activations share the GPU with the trainer's fp32 parameters, gradients and optimizer state.
DEFAULT_GPU_MEMORY_UTILIZATION = 0.3
#: Bound of one weight-sync bucket. In process a bucket costs memory, not round trips, so it is
#: smaller than verl's 2048 MB transfer buffer; a single larger tensor is sent alone.
DEFAULT_SYNC_BUCKET_MB = 512
_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


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


# --- pure helpers (tested on the CPU) ------------------------------------------------------------


def max_model_len(max_prompt: int, max_new_tokens: Iterable[int]) -> int:
    """vLLM's ``max_model_len`` for a run: the longest prompt plus the longest generation any of its
    calls asks for. vLLM reserves KV-cache room for at least one sequence of this length, so
    deriving it from the run (instead of the model's 32k-128k position limit) is what lets a
    colocated engine start inside a small ``gpu_memory_utilization``."""
    lengths = list(max_new_tokens)
    if max_prompt < 1 or not lengths or min(lengths) < 1:
        raise ValueError(f"need max_prompt >= 1 and generation lengths >= 1, got {max_prompt}, {lengths}")
    return max_prompt + max(lengths)


def reachable_stage_lengths(stages: Sequence[tuple[int, int]], steps: int) -> list[int]:
    """The ``max_response`` of every context stage a run of ``steps`` steps enters. ``stages`` are
    (until_step, max_response) in order; stage i runs from the previous until_step (0 for the
    first) up to its own, and the last stage also covers every later step. A stage that starts at
    or after ``steps`` is never sampled in, so its length must not size the engine."""
    if not stages:
        raise ValueError("no stages")
    out = []
    start = 0
    for until, max_response in stages:
        if start < steps or not out:
            out.append(max_response)
        start = until
    return out


def batch_seed(seed: int, rank: int = 0) -> int:
    """The seed of one batch on one rank (63 bits): ranks sample different prompts and must not
    share noise streams, and one process's batches differ by their seeds."""
    digest = hashlib.blake2b(f"orlab-vllm-batch:{seed}:{rank}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def hf_named_weights(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) of every parameter, named as in the HF checkpoint: the wrapper prefixes of DDP
    (``module.``) and torch.compile (``_orig_mod.``) are stripped, in any nesting. Tied parameters
    come once (``named_parameters`` skips the alias; vLLM skips ``lm_head`` of a tied model anyway).
    Lazy, and detached: nothing is copied here. Under ZeRO-3 the caller gathers first."""
    for name, param in model.named_parameters():
        stripped = None
        while stripped != name:
            stripped = name
            for prefix in ("module.", "_orig_mod."):
                name = name.removeprefix(prefix)
        yield name, param.detach()


def weight_buckets(
    named: Iterable[tuple[str, torch.Tensor]], bucket_bytes: int, dtype: torch.dtype
) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """Group (name, tensor) pairs, in order, into buckets of at most ``bucket_bytes`` bytes once cast
    to ``dtype``; a tensor larger than the bound is a bucket of its own. Each tensor is cast only
    when its bucket is filled, after the previous bucket was handed out, so while the consumer
    drops each bucket after use, at most one bucket of converted tensors exists at a time (never a
    full ``dtype`` copy of the model). A tensor already in ``dtype`` is passed through uncopied."""
    if bucket_bytes < 1:
        raise ValueError(f"bucket_bytes must be >= 1, got {bucket_bytes}")
    itemsize = torch.empty((), dtype=dtype).element_size()
    bucket: list[tuple[str, torch.Tensor]] = []
    used = 0
    for name, tensor in named:
        size = tensor.numel() * itemsize  # known before casting: decide first, convert after
        if bucket and used + size > bucket_bytes:
            yield bucket
            bucket, used = [], 0
        bucket.append((name, tensor.detach().to(dtype)))
        used += size
    if bucket:
        yield bucket


def sampling_params_kwargs(cfg: SamplingConfig, stops: Iterable[int]) -> dict[str, Any]:
    """Keyword arguments of the one ``vllm.SamplingParams`` of a batch. No ``seed``: per-request
    seeds force vLLM's per-request sampling loop (module docstring); the engine is seeded per batch.
    top_k disabled is -1, which every vLLM version accepts."""
    return {
        "n": cfg.n,
        "temperature": cfg.temperature,
        "top_p": cfg.top_p,
        "top_k": cfg.top_k if cfg.top_k > 0 else -1,
        "max_tokens": cfg.max_new_tokens,
        "logprobs": 0,
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
    """vLLM ``RequestOutput``s (one per prompt, in prompt order) to grouped :class:`Completion`s,
    each with the sampled tokens' log-probs.

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


def _seed_device_generator(_worker: Any, seed: int) -> None:
    """Runs on vLLM's worker through ``collective_rpc`` (a callable gets the worker first). vLLM's
    sampler draws requests without their own seed from the device's default generator
    (``random_sample``: ``q.exponential_()``), which this seeds; the CPU generator is left alone."""
    torch.cuda.manual_seed(seed)


def _torch_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    return _DTYPES[dtype]


def _world() -> tuple[int, int]:
    """(rank, world size) of torch.distributed, (0, 1) without it."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


# --- the engine ----------------------------------------------------------------------------------


class VllmEngine:
    """``RolloutEngine`` on ``vllm.LLM`` (one GPU per process, tensor parallel 1), colocated with
    the trainer and asleep whenever it is not sampling.

    ``model_path`` is a local HF checkpoint directory. ``max_model_len`` is required: derive it with
    :func:`max_model_len` from the run's longest prompt and generation. ``dtype`` is what vLLM
    computes in and what weights are synced in (the trainer's compute dtype: bf16 on CUDA);
    ``sync_bucket_bytes`` bounds one bucket of converted weights during a sync. Extra keyword
    arguments go to ``vllm.LLM`` unchanged (e.g. ``enforce_eager``).
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        max_model_len: int,
        tokenizer: PreTrainedTokenizerBase | None = None,
        dtype: str | torch.dtype = "bfloat16",
        gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION,
        sync_bucket_bytes: int = DEFAULT_SYNC_BUCKET_MB << 20,
        enable_prefix_caching: bool = True,
        **llm_kwargs: Any,
    ):
        if not available():
            raise RuntimeError(
                "VllmEngine needs vllm and a CUDA device (install the [gpu] extra into a fresh "
                "virtualenv on a GPU host); use trainers.common.rollout.TorchSampler on the CPU"
            )
        if llm_kwargs.get("tensor_parallel_size", 1) != 1:
            raise ValueError("VllmEngine syncs weights in process and supports tensor_parallel_size=1 only")
        if not 0 < gpu_memory_utilization < 1:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1), got {gpu_memory_utilization}")
        if sync_bucket_bytes < 1:
            raise ValueError(f"sync_bucket_bytes must be >= 1, got {sync_bucket_bytes}")
        # Must be set before the engine starts: keeps EngineCore in this process (module docstring).
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        rank, world = _world()
        if world > 1:  # one engine per rank on its own GPU (TRL's colocate mode)
            llm_kwargs.setdefault("distributed_executor_backend", "external_launcher")
        vllm = importlib.import_module("vllm")
        path = Path(model_path)
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(path)
        self.stop_ids = _stop_ids(path, self.tokenizer)
        self.dtype = _torch_dtype(dtype)
        self.max_model_len = max_model_len
        self.sync_bucket_bytes = sync_bucket_bytes
        self.rank = rank
        self.in_process = os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
        self._sampling_params = vllm.SamplingParams
        self.llm = vllm.LLM(
            model=str(path),
            skip_tokenizer_init=True,
            dtype=str(self.dtype).removeprefix("torch."),
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            enable_sleep_mode=True,
            enable_prefix_caching=enable_prefix_caching,
            seed=0,  # replaced per batch (batch_seed)
            logprobs_mode="processed_logprobs",
            generation_config="vllm",  # a checkpoint's generation_config.json must not change sampling
            **llm_kwargs,
        )
        self.asleep: set[str] = set()
        self._weights_changed = False
        self.sleep()  # the trainer gets the memory until the first rollout

    # --- residency ---------------------------------------------------------------------------------
    def sleep(self) -> None:
        """Release the GPU memory (level 1: weights to host memory, KV cache dropped)."""
        if self.asleep == {WEIGHTS, KV_CACHE}:
            return
        # vLLM wants every tag awake before the engine is used again; a half-awake engine (weights
        # woken for a sync that no rollout followed) is woken fully before it sleeps.
        self._wake(WEIGHTS, KV_CACHE)
        self.llm.sleep(level=SLEEP_LEVEL)
        self.asleep = {WEIGHTS, KV_CACHE}

    def _wake(self, *tags: str) -> None:
        """Wake the given tags that are asleep, in the order given."""
        todo = [t for t in tags if t in self.asleep]
        if not todo:
            return
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # hand the trainer's cached free blocks back before vLLM maps memory
        self.llm.wake_up(tags=todo)
        self.asleep.difference_update(todo)

    # --- RolloutEngine -----------------------------------------------------------------------------
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
        prompt_keys: Sequence[int] | None = None,
    ) -> list[list[Completion]]:
        """``n`` completions per prompt. ``seed`` seeds the whole batch (module docstring);
        ``prompt_keys`` are ignored: vLLM draws one stream per batch, not per prompt."""
        cfg = SamplingConfig(
            n=n, temperature=temperature, top_p=top_p, top_k=top_k, max_new_tokens=max_new_tokens
        )
        prompt_ids = encode_prompts(self.tokenizer, prompts)
        if not prompt_ids:
            return []
        longest = max(len(ids) for ids in prompt_ids)
        if longest + cfg.max_new_tokens > self.max_model_len:
            raise ValueError(
                f"a prompt of {longest} tokens plus max_new_tokens={cfg.max_new_tokens} exceeds the "
                f"engine's max_model_len={self.max_model_len} (derived from the run's prompt and "
                "response limits): vLLM would cut the completion short"
            )
        params = self._sampling_params(**sampling_params_kwargs(cfg, self.stop_ids))
        self._wake(WEIGHTS, KV_CACHE)
        try:
            if self._weights_changed:  # prefix blocks computed with the old weights must not be reused
                self.llm.reset_prefix_cache()
                self._weights_changed = False
            if seed is not None:
                self.llm.collective_rpc(_seed_device_generator, args=(batch_seed(seed, self.rank),))
            requests = [{"prompt_token_ids": list(ids)} for ids in prompt_ids]
            outputs = self.llm.generate(requests, params, use_tqdm=False)
        finally:
            self.sleep()
        return completions_from_outputs(outputs, prompt_ids, self.tokenizer, self.stop_ids, cfg.n)

    def sync_weights(self, model: nn.Module) -> None:
        """Copy ``model``'s parameters (an HF causal LM of the same architecture; under ZeRO-3
        gathered by the caller) into the engine, cast to the engine dtype one bucket at a time.
        Only the weights are woken; the KV cache waits for the next ``generate``."""
        if not self.in_process:
            raise RuntimeError(
                "sync_weights needs the vLLM engine core in this process: construct VllmEngine "
                "with VLLM_ENABLE_V1_MULTIPROCESSING unset or 0"
            )
        self._wake(WEIGHTS)
        buckets = weight_buckets(hf_named_weights(model), self.sync_bucket_bytes, self.dtype)

        def load(vllm_model: nn.Module) -> None:
            for bucket in buckets:
                vllm_model.load_weights(bucket)
                del bucket  # drop the converted tensors before the next bucket is cast

        with torch.no_grad():
            self.llm.apply_model(load)
        self._weights_changed = True
