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
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
from torch import nn
from transformers import DynamicCache, PreTrainedTokenizerBase

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
    ) -> list[list[Completion]]:
        """``n`` completions for every prompt (text, or token ids used as they are), grouped: the
        i-th list holds the completions of ``prompts[i]``."""
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


def chunk_generator(seed: int | None, chunk: int, device: torch.device) -> torch.Generator:
    """The generator of chunk ``chunk``: seeded from (seed, chunk) through a hash, so chunks get
    unrelated streams; ``seed=None`` gives a fresh nondeterministic one."""
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        digest = hashlib.blake2b(f"orlab-rollout:{seed}:{chunk}".encode(), digest_size=8).digest()
        generator.manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))
    return generator


def draw_noise(
    generator: torch.Generator | None, rows: int, vocab: int, device: torch.device
) -> torch.Tensor:
    """Exponential(1) noise, one row per sequence of the chunk. Drawn for every row of the chunk
    at every step (finished rows included), so a row's samples depend only on the seed, the chunk
    layout and the step, not on which other rows have already stopped. Clamped away from 0, where
    log(E) = -inf would turn a filtered token's -inf score into NaN (which argmax picks)."""
    noise = torch.empty(rows, vocab, dtype=torch.float32, device=device).exponential_(generator=generator)
    return noise.clamp_(min=torch.finfo(torch.float32).tiny)


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
    [nn.Module, list[list[int]], SamplingConfig, set[int], int, "torch.Generator | None"], list[_Row]
]


def _generate_chunk_cached(
    model: nn.Module,
    prompts: list[list[int]],
    cfg: SamplingConfig,
    stops: set[int],
    pad_id: int,
    generator: torch.Generator | None,
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
        noise = None if cfg.greedy else draw_noise(generator, len(rows), logits.shape[-1], device)
        lps = sampling_logprobs(logits, cfg)
        tokens = pick_tokens(lps, None if noise is None else noise[active])
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
    generator: torch.Generator | None,
) -> list[_Row]:
    """The reference: every step re-runs the full forward over prompt + tokens so far (no cache),
    with the same noise stream as the cached path. Quadratic in length; for tests and benches."""
    device = next(model.parameters()).device
    rows = [_Row(list(p)) for p in prompts]
    active = list(range(len(rows)))
    for _ in range(cfg.max_new_tokens):
        ids, mask = _left_pad([rows[r].prompt_ids + rows[r].tokens for r in active], pad_id, device)
        out = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=_positions(mask),
            use_cache=False,
            logits_to_keep=1,
        )
        logits = out.logits[:, -1, :]
        noise = None if cfg.greedy else draw_noise(generator, len(rows), logits.shape[-1], device)
        lps = sampling_logprobs(logits, cfg)
        tokens = pick_tokens(lps, None if noise is None else noise[active])
        _record(rows, active, tokens, lps, stops)
        active = [r for r in active if not rows[r].stopped]
        if not active:
            break
    return rows


def _run(
    chunk_fn: ChunkFn,
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Prompts,
    cfg: SamplingConfig,
    seed: int | None,
    batch_size: int,
    stops: set[int],
) -> list[list[Completion]]:
    """Expand prompts into n rows each (a prompt's samples adjacent), sample them in chunks of
    ``batch_size`` rows, and regroup per prompt. Each chunk has its own generator (see
    :func:`chunk_generator`), so how long one chunk runs never shifts another's random stream."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    prompt_ids = encode_prompts(tokenizer, prompts)
    flat = [ids for ids in prompt_ids for _ in range(cfg.n)]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(stops)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()  # dropout off while sampling; the caller's mode is restored below
    try:
        with torch.inference_mode():
            rows: list[_Row] = []
            for start in range(0, len(flat), batch_size):
                generator = None if cfg.greedy else chunk_generator(seed, start // batch_size, device)
                rows.extend(chunk_fn(model, flat[start : start + batch_size], cfg, stops, pad_id, generator))
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

    Deterministic: the same prompts, knobs, ``seed`` and ``batch_size`` give the same completions
    (``batch_size`` matters because noise is drawn per chunk). ``sync_weights`` just points at the
    given model: the sampler shares the trainer's parameters, so there is nothing to copy.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        *,
        batch_size: int = 64,
        stop_token_ids: Iterable[int] | None = None,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
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
) -> list[list[Completion]]:
    """Reference sampler without a KV cache: same chunks, same noise, same outputs as
    :class:`TorchSampler` (up to float rounding in the logits), at quadratic cost."""
    cfg = SamplingConfig(
        n=n, temperature=temperature, top_p=top_p, top_k=top_k, max_new_tokens=max_new_tokens
    )
    stops = (
        set(int(t) for t in stop_token_ids) if stop_token_ids is not None else eos_token_ids(model, tokenizer)
    )
    return _run(_generate_chunk_uncached, model, tokenizer, prompts, cfg, seed, batch_size, stops)
