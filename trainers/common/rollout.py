"""Rollout engines: the interface a trainer samples through, and the PyTorch implementation.

Why an interface: a GRPO step is "sample n completions per prompt, score, update, push the new
weights to the sampler". On a GPU host the sampler is vLLM (``trainers.common.vllm_engine``); on a
CPU, in tests and demos it is :class:`TorchSampler`. Both return the same :class:`Completion`
records, so trainers never know which one ran.

Conventions shared by both engines (they follow vLLM with ``logprobs_mode="processed_logprobs"``):

* ``temperature == 0`` is greedy decoding (argmax); ``top_k <= 0`` and ``top_p == 1`` disable the
  filters. Filters apply in vLLM's order: temperature, then top-k, then top-p.
* ``Completion.logprobs[t]`` is the log-probability of the sampled token under the distribution it
  was drawn from: ``log_softmax(logits / T)`` restricted and renormalised to the top-k / top-p set.
  With greedy decoding it is ``log_softmax(logits)`` (temperature taken as 1). The trainer
  recomputes its own log-probs for the PPO ratio (Skywork-OR1 does); these are for metrics and
  for checking that sampler and trainer agree.
* ``completion_ids`` include the EOS token when the model emitted one (the trainer must learn to
  stop); ``completion_text`` is decoded without special tokens.
* ``truncated`` is True exactly when ``max_new_tokens`` tokens were generated and the last one is
  not a stop token (``finish_reason == "length"``); otherwise ``finish_reason == "stop"``.

Seeding of the torch sampler: the noise of the j-th sample of the prompt with key k at decode position
t is a pure function of (seed, k, j, t) (a counter-based splitmix64 hash, :func:`row_noise`), so a
rollout does not depend on the batch layout, the other prompts of the call or the world size: a
trainer that splits a step's prompts over ranks passes their global keys and gets the same samples.
"""

from __future__ import annotations

import contextlib
import math
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn
from transformers import DynamicCache, PreTrainedTokenizerBase

from trainers.common.chat import check_mode, prompt_ids

Prompts = Sequence[str] | Sequence[Sequence[int]]


@dataclass
class Completion:
    """One sampled continuation of one prompt."""

    prompt_ids: list[int]
    completion_ids: list[int]
    completion_text: str
    #: One float per completion token: its log-probability under the sampling distribution.
    logprobs: list[float]
    #: Hit ``max_new_tokens`` without a stop token.
    truncated: bool
    #: "stop" (a stop token was sampled) or "length" (``max_new_tokens`` reached).
    finish_reason: str


@runtime_checkable
class RolloutEngine(Protocol):
    """What a trainer needs from a sampler."""

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
        """``n`` completions for every prompt (text, or token ids used as they are), grouped: the
        i-th list holds the completions of ``prompts[i]``. ``prompt_keys`` (default: the positions)
        name the prompts for seeding: an engine that seeds per sample (the torch sampler) gives
        prompt key k's j-th sample the same stream in every call with the same seed."""
        ...

    def sync_weights(self, model: nn.Module) -> None:
        """Make the next ``generate`` use ``model``'s current weights (vLLM: copy them into the
        engine; torch: point at the model)."""
        ...


@dataclass(frozen=True)
class SamplingConfig:
    """Validated sampling knobs (see the module docstring for their meaning)."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 256

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):
            raise ValueError(f"temperature must be finite and >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def encode_prompts(tokenizer: PreTrainedTokenizerBase, prompts: Prompts) -> list[list[int]]:
    """Token ids of every prompt. Strings are encoded as vLLM encodes them (``tokenizer.encode``
    with the tokenizer's default special tokens); id lists are used unchanged. Empty prompts are
    rejected: there is no position to predict the first token from."""
    out: list[list[int]] = []
    for i, prompt in enumerate(prompts):
        ids = tokenizer.encode(prompt) if isinstance(prompt, str) else [int(t) for t in prompt]
        if not ids:
            raise ValueError(f"prompt {i} is empty after tokenization")
        out.append(ids)
    return out


def eos_token_ids(model: nn.Module, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """EOS ids from the tokenizer and the model's generation config (chat models often list
    several, e.g. <|im_end|> and <|endoftext|>)."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    gen = getattr(model, "generation_config", None)
    eos = getattr(gen, "eos_token_id", None) if gen is not None else None
    if isinstance(eos, int):
        ids.add(eos)
    elif isinstance(eos, Iterable):
        ids.update(int(e) for e in eos)
    if not ids:
        raise ValueError("no stop token: neither the tokenizer nor the generation config has an EOS id")
    return ids


def sampling_logprobs(logits: torch.Tensor, cfg: SamplingConfig) -> torch.Tensor:
    """Log-probabilities (float32) of the distribution tokens are drawn from, for rows of
    ``logits`` (batch, vocab): temperature, then top-k, then top-p (vLLM's order and tie rules),
    renormalised; filtered tokens get -inf. Greedy mode returns ``log_softmax(logits)``."""
    logits = logits.float()
    if cfg.greedy:
        return torch.log_softmax(logits, dim=-1)
    logits = logits / cfg.temperature
    vocab = logits.shape[-1]
    if 0 < cfg.top_k < vocab:
        kth = torch.topk(logits, cfg.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    if cfg.top_p < 1:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=False)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop = cumulative <= 1 - cfg.top_p
        drop[:, -1] = False  # always keep the most likely token
        sorted_logits = sorted_logits.masked_fill(drop, -math.inf)
        logits = torch.empty_like(logits).scatter_(-1, order, sorted_logits)
    return torch.log_softmax(logits, dim=-1)


_MASK64 = (1 << 64) - 1
_GAMMA = 0x9E3779B97F4A7C15  # splitmix64's increment (2^64 / golden ratio)
_MUL1, _MUL2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB  # splitmix64's finaliser multipliers


def _as_int64(x: int) -> int:
    """The two's-complement int64 with the bits of ``x mod 2^64`` (what a torch int64 holds)."""
    x &= _MASK64
    return x - (1 << 64) if x >> 63 else x


def mix64(x: int) -> int:
    """splitmix64's finaliser on a Python int (mod 2^64): the reference the tensor version matches."""
    z = x & _MASK64
    z = ((z ^ (z >> 30)) * _MUL1) & _MASK64
    z = ((z ^ (z >> 27)) * _MUL2) & _MASK64
    return z ^ (z >> 31)


def _shift_right(z: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 bits (torch's ``>>`` is arithmetic on signed integers)."""
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def _mix64_tensor(z: torch.Tensor) -> torch.Tensor:
    """:func:`mix64` elementwise on int64 tensors; products wrap mod 2^64 as the integer ops do."""
    z = (z ^ _shift_right(z, 30)) * _as_int64(_MUL1)
    z = (z ^ _shift_right(z, 27)) * _as_int64(_MUL2)
    return z ^ _shift_right(z, 31)


def sample_key(seed: int, prompt_key: int, sample: int) -> int:
    """The 64-bit key of one sampled row: a hash of (seed, prompt key, sample index) and nothing else,
    so a row draws the same noise whatever batch, chunk, subset of prompts or rank it is sampled in."""
    key = 0
    for part in (seed, prompt_key, sample):
        key = mix64((key ^ mix64((part + _GAMMA) & _MASK64)) + _GAMMA)
    return key


#: rows x vocab elements hashed at once (bounds the int64 temporaries: 128 MB each)
_NOISE_ELEMENTS = 2**24


def row_noise(keys: torch.Tensor, position: int, vocab: int) -> torch.Tensor:
    """Exponential(1) noise (float32, rows x vocab) for decode ``position`` of the rows whose
    :func:`sample_key` values are ``keys`` (int64). Counter-based: element (r, v) is
    ``-log(u)`` with ``u`` from the top 53 bits of ``mix64(mix64(key_r + (position+1) G) + (v+1) G)``
    (G the splitmix64 increment), so the noise of a row at a position is a pure function of its key
    and the position. ``u`` lies in (0, 1): no infinite noise, so a filtered token's -inf score never
    becomes NaN."""
    device = keys.device
    base = _mix64_tensor(keys + _as_int64((position + 1) * _GAMMA))
    offsets = (torch.arange(vocab, device=device, dtype=torch.int64) + 1) * _as_int64(_GAMMA)
    out = torch.empty(len(keys), vocab, dtype=torch.float32, device=device)
    step = max(1, _NOISE_ELEMENTS // max(1, vocab))
    for start in range(0, len(keys), step):
        h = _mix64_tensor(base[start : start + step, None] + offsets)
        u = (_shift_right(h, 11).to(torch.float64) + 0.5) * 2.0**-53
        out[start : start + step] = (-torch.log(u)).to(torch.float32)
    return out


def pick_tokens(logprobs: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
    """argmax(logp) when greedy (``noise is None``), else argmax(logp - log(E)), E ~ Exp(1): the
    exponential race (Gumbel-max), an exact sample from softmax(logp) that is a pure function of
    the noise, so the cached and uncached samplers draw identical tokens."""
    if noise is None:
        return logprobs.argmax(dim=-1)
    return (logprobs - noise.log()).argmax(dim=-1)


@dataclass
class _Row:
    prompt_ids: list[int]
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    stopped: bool = False


def _left_pad(
    seqs: Sequence[Sequence[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids and the matching 0/1 attention mask. Left padding keeps every row's last
    real token in the last column, where the next-token logits are read."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s) :] = torch.tensor(list(s), dtype=torch.long)
        mask[i, width - len(s) :] = 1
    return ids.to(device), mask.to(device)


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count real tokens only (0 for the first real token of every row)."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def _record(
    rows: list[_Row], active: list[int], tokens: torch.Tensor, lps: torch.Tensor, stops: set[int]
) -> None:
    chosen = lps.gather(-1, tokens[:, None]).squeeze(-1).tolist()
    for row_idx, tok, lp in zip(active, tokens.tolist(), chosen, strict=True):
        row = rows[row_idx]
        row.tokens.append(tok)
        row.logprobs.append(lp)
        row.stopped = tok in stops


ChunkFn = Callable[
    [nn.Module, list[list[int]], SamplingConfig, set[int], int, "torch.Tensor | None"], list[_Row]
]


def _step_noise(keys: torch.Tensor | None, active: list[int], position: int, vocab: int):
    """The noise of the rows still decoding (None when greedy): each row's own stream (its key) at this
    decode position, so rows that stopped draw nothing and shift nobody else's noise."""
    if keys is None:
        return None
    return row_noise(keys[torch.tensor(active, device=keys.device)], position, vocab)


def _generate_chunk_cached(
    model: nn.Module,
    prompts: list[list[int]],
    cfg: SamplingConfig,
    stops: set[int],
    pad_id: int,
    keys: torch.Tensor | None,
) -> list[_Row]:
    """One batch with a KV cache: a prefill over the left-padded prompts, then one token per row
    per step. Rows that stop are dropped from the cache, the mask and the batch (so late steps
    only pay for live rows), and the loop ends as soon as every row has stopped."""
    device = next(model.parameters()).device
    rows = [_Row(list(p)) for p in prompts]
    ids, mask = _left_pad(prompts, pad_id, device)
    positions = _positions(mask)
    cache = DynamicCache(config=model.config)
    out = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions,
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    logits = out.logits[:, -1, :]
    next_pos = positions[:, -1:] + 1
    active = list(range(len(rows)))
    for step in range(cfg.max_new_tokens):
        noise = _step_noise(keys, active, step, logits.shape[-1])
        lps = sampling_logprobs(logits, cfg)
        tokens = pick_tokens(lps, noise)
        _record(rows, active, tokens, lps, stops)
        if step == cfg.max_new_tokens - 1:
            break
        keep = [i for i, r in enumerate(active) if not rows[r].stopped]
        if not keep:
            break
        if len(keep) < len(active):
            index = torch.tensor(keep, device=device)
            cache.batch_select_indices(index)
            mask, next_pos, tokens = mask[index], next_pos[index], tokens[index]
            active = [active[i] for i in keep]
        mask = torch.cat([mask, mask.new_ones(len(active), 1)], dim=1)
        out = model(
            input_ids=tokens[:, None],
            attention_mask=mask,
            position_ids=next_pos,
            past_key_values=cache,
            use_cache=True,
        )
        logits = out.logits[:, -1, :]
        next_pos = next_pos + 1
    return rows


def _generate_chunk_uncached(
    model: nn.Module,
    prompts: list[list[int]],
    cfg: SamplingConfig,
    stops: set[int],
    pad_id: int,
    keys: torch.Tensor | None,
) -> list[_Row]:
    """The reference: every step re-runs the full forward over prompt + tokens so far (no cache),
    with the same noise as the cached path. Quadratic in length; for tests and benches."""
    device = next(model.parameters()).device
    rows = [_Row(list(p)) for p in prompts]
    active = list(range(len(rows)))
    for step in range(cfg.max_new_tokens):
        ids, mask = _left_pad([rows[r].prompt_ids + rows[r].tokens for r in active], pad_id, device)
        out = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=_positions(mask),
            use_cache=False,
            logits_to_keep=1,
        )
        logits = out.logits[:, -1, :]
        noise = _step_noise(keys, active, step, logits.shape[-1])
        lps = sampling_logprobs(logits, cfg)
        tokens = pick_tokens(lps, noise)
        _record(rows, active, tokens, lps, stops)
        active = [r for r in active if not rows[r].stopped]
        if not active:
            break
    return rows


def compute_context(model: nn.Module, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Autocast to ``dtype`` when the model's parameters are held in another floating dtype (the torch
    engine keeps fp32 master weights and computes in bf16); nothing when they already are ``dtype``.
    One context around a whole ``generate`` call: autocast's weight-cast cache then converts each
    weight once per call (not once per decode step) and frees the bf16 copies when sampling ends."""
    param = next(model.parameters())
    if dtype is None or not param.is_floating_point() or param.dtype == dtype:
        return contextlib.nullcontext()
    return torch.autocast(device_type=param.device.type, dtype=dtype)


def _run(
    chunk_fn: ChunkFn,
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Prompts,
    cfg: SamplingConfig,
    seed: int | None,
    batch_size: int,
    stops: set[int],
    prompt_keys: Sequence[int] | None = None,
    compute_dtype: torch.dtype | None = None,
) -> list[list[Completion]]:
    """Expand prompts into n rows each (a prompt's samples adjacent), sample them in chunks of
    ``batch_size`` rows, and regroup per prompt. Row (prompt i, sample j) draws its noise from
    :func:`sample_key` (seed, ``prompt_keys[i]``, j), so its completion does not depend on the chunk
    size, on which other prompts are in the call, or on which process samples it."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    prompt_ids = encode_prompts(tokenizer, prompts)
    if prompt_keys is None:
        prompt_keys = range(len(prompt_ids))
    elif len(prompt_keys) != len(prompt_ids):
        raise ValueError(f"{len(prompt_keys)} prompt_keys for {len(prompt_ids)} prompts")
    if seed is None:
        seed = secrets.randbits(63)
    flat = [ids for ids in prompt_ids for _ in range(cfg.n)]
    keys = [_as_int64(sample_key(seed, int(k), j)) for k in prompt_keys for j in range(cfg.n)]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(stops)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()  # dropout off while sampling; the caller's mode is restored below
    try:
        with torch.inference_mode(), compute_context(model, compute_dtype):
            rows: list[_Row] = []
            for start in range(0, len(flat), batch_size):
                chunk_keys = (
                    None
                    if cfg.greedy
                    else torch.tensor(keys[start : start + batch_size], dtype=torch.int64, device=device)
                )
                rows.extend(chunk_fn(model, flat[start : start + batch_size], cfg, stops, pad_id, chunk_keys))
    finally:
        model.train(was_training)
    completions = [_to_completion(row, tokenizer, stops) for row in rows]
    return [completions[i * cfg.n : (i + 1) * cfg.n] for i in range(len(prompt_ids))]


def _to_completion(row: _Row, tokenizer: PreTrainedTokenizerBase, stops: set[int]) -> Completion:
    stopped = bool(row.tokens) and row.tokens[-1] in stops
    return Completion(
        prompt_ids=row.prompt_ids,
        completion_ids=row.tokens,
        completion_text=tokenizer.decode(row.tokens, skip_special_tokens=True),
        logprobs=row.logprobs,
        truncated=not stopped,
        finish_reason="stop" if stopped else "length",
    )


class TorchSampler:
    """Batched sampling on the trainer's own model with a KV cache (HF ``DynamicCache``).

    Deterministic: the same prompt (and prompt key), knobs and ``seed`` give the same completions
    whatever the batch size, the other prompts of the call, or the process (up to float rounding of
    the logits, which padding to another width can change). ``sync_weights`` just points at the given
    model: the sampler shares the trainer's parameters, so there is nothing to copy.

    ``compute_dtype`` (e.g. bfloat16 on CUDA): sample under autocast to that dtype when the model is
    held in another one. The torch engine keeps fp32 master weights; autocast over one ``generate``
    call converts each weight once (its cast cache) and frees the copies afterwards, so no second
    model has to be kept in memory and in sync. The KV cache then holds bf16 values (keys in fp32:
    Qwen2's rotary embedding multiplies them by fp32 tables). A model already in bf16 (DeepSpeed's
    bf16 mode, a ZeRO-3 sampling copy) samples in bf16 directly.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        *,
        batch_size: int = 64,
        stop_token_ids: Iterable[int] | None = None,
        compute_dtype: torch.dtype | None = None,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.compute_dtype = compute_dtype
        self.stop_ids = (
            set(int(t) for t in stop_token_ids)
            if stop_token_ids is not None
            else eos_token_ids(model, tokenizer)
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
        prompt_keys: Sequence[int] | None = None,
    ) -> list[list[Completion]]:
        cfg = SamplingConfig(
            n=n, temperature=temperature, top_p=top_p, top_k=top_k, max_new_tokens=max_new_tokens
        )
        return _run(
            _generate_chunk_cached,
            self.model,
            self.tokenizer,
            prompts,
            cfg,
            seed,
            self.batch_size,
            self.stop_ids,
            prompt_keys,
            self.compute_dtype,
        )

    def sync_weights(self, model: nn.Module) -> None:
        self.model = model


def sample_without_cache(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Prompts,
    *,
    n: int = 1,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    max_new_tokens: int = 256,
    seed: int | None = None,
    batch_size: int = 64,
    stop_token_ids: Iterable[int] | None = None,
    prompt_keys: Sequence[int] | None = None,
    compute_dtype: torch.dtype | None = None,
) -> list[list[Completion]]:
    """Reference sampler without a KV cache: same noise, same outputs as :class:`TorchSampler` (up to
    float rounding in the logits), at quadratic cost."""
    cfg = SamplingConfig(
        n=n, temperature=temperature, top_p=top_p, top_k=top_k, max_new_tokens=max_new_tokens
    )
    stops = (
        set(int(t) for t in stop_token_ids) if stop_token_ids is not None else eos_token_ids(model, tokenizer)
    )
    return _run(
        _generate_chunk_uncached,
        model,
        tokenizer,
        prompts,
        cfg,
        seed,
        batch_size,
        stops,
        prompt_keys,
        compute_dtype,
    )


def _is_token_ids(prompt: Any) -> bool:
    return not isinstance(prompt, str) and all(isinstance(t, int) for t in prompt)


class ChatTemplateEngine:
    """A :class:`RolloutEngine` that renders text prompts (and conversations) with a chat template
    (:mod:`trainers.common.chat`, ``mode`` = a config's ``chat_template``) and hands the engine token
    ids; prompts that already are token ids pass through unchanged, so nothing is rendered twice.
    Used where the caller holds raw problem text (the in-run evaluation)."""

    def __init__(self, engine: RolloutEngine, tokenizer: PreTrainedTokenizerBase, mode: str):
        check_mode(tokenizer, mode)
        self.engine, self.tokenizer, self.mode = engine, tokenizer, mode

    def render(self, prompts: Sequence[Any]) -> list[list[int]]:
        return [
            [int(t) for t in p] if _is_token_ids(p) else prompt_ids(self.tokenizer, p, self.mode)
            for p in prompts
        ]

    def generate(self, prompts: Sequence[Any], **kwargs: Any) -> list[list[Completion]]:
        return self.engine.generate(self.render(prompts), **kwargs)

    def sync_weights(self, model: nn.Module) -> None:
        self.engine.sync_weights(model)
