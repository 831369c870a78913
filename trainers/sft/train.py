"""SFT: next-token cross-entropy on the assistant turn of chat-rendered (prompt, solution) pairs.

    python -m trainers.sft --config cfg.yaml

Every example is rendered with the model's chat template (``chat_template``; trainers.common.chat):
the prompt as a user turn plus the generation prompt, then the solution and the end-of-turn token,
which are the only labelled tokens (no BOS before the solution). The greedy evaluation renders its
prompts the same way, as do RL rollouts and on-demand evaluation, so the policy is always read in
the format it was trained on.

One optimizer step takes ``batch_size`` sequences, split into micro-batches of at most
``micro_batch_tokens`` (rows x padded length) of similar lengths; each micro-batch's summed token
loss is divided by the whole batch's labelled-token count and back-propagated, so the accumulated
gradient is the un-split batch's token-mean gradient. Log-probabilities come from
trainers.common.token_batching (response positions only, the LM head in chunks): no (B, L, V)
logits. Precision follows ``dtype`` (fp32 weights and AdamW state, bf16 autocast on CUDA by
default); checkpoints are written in the training dtype (trainers.common.checkpoints).

Several ranks (``nproc_per_node`` x ``nodes``, started by torch.distributed's launcher; the sink is a
RankZeroSink, trainers.common.distributed): every rank draws the same global batch (the data order
depends on seed and step only) and takes its contiguous share; the labelled-token count is summed over
the ranks, so each rank's loss is its share of the global token mean (times the world size: DDP
averages the gradients). Ranks pad their forward/backward passes to the same count with a zero-loss
pass, as DDP reduces gradients in every backward. Rank 0 evaluates and writes the checkpoints; every
rank resumes from them. On the CPU, 2 gloo ranks give the one-process losses (tests/trainers).

The CPU demo trains the tiny model on generated arithmetic until its greedy accuracy is clearly
above zero but far from perfect: the starting point the RL and DAPO demos improve on, as the
distilled models are for OR1."""

from __future__ import annotations

import contextlib
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from trainers.base import Sink
from trainers.common import chat, distributed
from trainers.common.checkpoints import (
    load_optimizer_state,
    read_trainer_state,
    save_optimizer_state,
    write_policy,
    write_trainer_state,
)
from trainers.common.models import load_policy, resolve_model_path, seed_everything
from trainers.common.precision import (
    Precision,
    enable_gradient_checkpointing,
    peak_memory_bytes,
    resolve_precision,
)
from trainers.common.rollout import TorchSampler
from trainers.common.tiny import is_char_tokenizer_dir
from trainers.common.token_batching import split_by_token_budget, token_logprobs_and_hits
from trainers.common.verifiers.math import verify_math
from trainers.sft.config import SFTConfig
from trainers.sft.data import Example, generated, read_problems

IGNORE = -100


def encode_example(
    tokenizer, ex: Example, max_length: int, mode: str = "auto"
) -> tuple[list[int], list[int]]:
    """(input ids, labels) of the chat-rendered example, labels -100 on the prompt: only the assistant
    turn (the solution and its end-of-turn token) is learned. Cut to ``max_length`` tokens."""
    prompt, answer = chat.sft_ids(tokenizer, ex.prompt, ex.solution, mode)
    ids = (prompt + answer)[:max_length]
    labels = ([IGNORE] * len(prompt) + answer)[:max_length]
    return ids, labels


def collate(batch: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded input ids, labels (-100 on padding) and attention mask."""
    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), pad_id)
    labels = torch.full((len(batch), width), IGNORE)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, (x, y) in enumerate(batch):
        ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(y)] = torch.tensor(y)
        mask[i, : len(x)] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def labelled_tokens(example: tuple[list[int], list[int]]) -> int:
    """Tokens of ``example`` that carry a loss (position 0 is never predicted)."""
    return sum(1 for y in example[1][1:] if y != IGNORE)


class SFTLogprobs(torch.nn.Module):
    """A causal LM seen as the loss sees it (log-probs and argmax hits of the response positions,
    never the (B, L, V) logits): the module DDP wraps, so its forward runs inside DDP's hooks."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, response_mask):
        return token_logprobs_and_hits(self.model, input_ids, attention_mask, response_mask)


@dataclass(frozen=True)
class StepResult:
    loss: float  # mean token cross-entropy over the batch's labelled tokens
    token_accuracy: float  # share of labelled tokens that are the argmax
    tokens: int  # real (unpadded) tokens of the batch
    micro_batches: int  # forwards with labelled tokens (all ranks together)


def accumulate_gradients(
    model: torch.nn.Module,
    examples: list[tuple[list[int], list[int]]],
    pad_id: int,
    *,
    micro_batch_tokens: int,
    precision: Precision,
    forward: torch.nn.Module | None = None,
    dummy: tuple[list[int], list[int]] | None = None,
) -> StepResult:
    """Forward and backward of one batch in token-budget micro-batches; gradients add up in ``.grad``.

    Each micro-batch contributes (sum of its tokens' negative log-likelihood) / (labelled tokens of
    the whole batch), so the accumulated loss and gradient are those of the un-split batch's global
    token mean, however the batch is split.

    Several ranks: ``examples`` are this rank's share of the global batch, ``forward`` the DDP-wrapped
    :class:`SFTLogprobs` and ``dummy`` an example whose zero-loss passes pad this rank's passes to the
    most any rank makes (DDP reduces gradients in every backward). The labelled-token count is summed
    over the ranks and the loss multiplied by the world size (DDP averages), so the averaged gradient
    and the returned statistics are the global batch's."""
    forward = forward if forward is not None else SFTLogprobs(model)
    scale = distributed.mean_loss_scale(
        distributed.all_reduce_sum(float(sum(map(labelled_tokens, examples))))
    )
    groups = split_by_token_budget([len(ids) for ids, _ in examples], micro_batch_tokens) if examples else []
    passes: list[list[int] | None] = list(groups)
    if dummy is not None:
        passes += [None] * (int(distributed.all_reduce_max(float(len(groups)))) - len(groups))
    nll_sum, hits_sum, used = 0.0, 0, 0
    for group in passes:
        rows = [examples[i] for i in group] if group is not None else [dummy]
        batch = {k: v.to(precision.device) for k, v in collate(rows, pad_id).items()}
        response = batch["labels"][:, 1:] != IGNORE
        if dummy is None and not bool(response.any()):
            continue  # nothing to learn here (a prompt cut at max_length); one process may skip it
        with precision.autocast():
            logp, hits = forward(batch["input_ids"], batch["attention_mask"], response)
        nll = -(logp * response).sum()
        if group is None:
            nll = nll * 0.0  # a pass that only keeps this rank in step with the others
        (nll * scale).backward()
        if group is not None:
            nll_sum += float(nll.detach())
            hits_sum += int((hits & response).sum())
            used += int(bool(response.any()))
    here = {"nll": nll_sum, "hits": hits_sum, "used": used, "tokens": sum(len(ids) for ids, _ in examples)}
    total = distributed.all_reduce_sums(here)  # the global batch's sums (a no-op in one process)
    labelled = max(1.0, distributed.world_size() / scale)
    return StepResult(
        total["nll"] / labelled, total["hits"] / labelled, int(total["tokens"]), int(total["used"])
    )


@torch.no_grad()
def greedy_accuracy(
    model,
    tokenizer,
    problems: list[Example],
    max_new_tokens: int,
    *,
    chat_template: str = "auto",
    precision: Precision | None = None,
) -> float:
    """Share of problems whose greedy completion of the chat-rendered prompt the math verifier accepts."""
    was_training = model.training
    model.eval()
    sampler = TorchSampler(model, tokenizer, batch_size=64)
    prompts = chat.render_prompts(tokenizer, [p.prompt for p in problems], chat_template)
    with precision.autocast() if precision is not None else contextlib.nullcontext():
        outs = sampler.generate(prompts, n=1, temperature=0.0, max_new_tokens=max_new_tokens)
    correct = sum(
        verify_math(o[0].completion_text, p.answer).reward for o, p in zip(outs, problems, strict=True)
    )
    model.train(was_training)
    return correct / max(1, len(problems))


def lr_at(step: int, cfg: SFTConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def _save(sink: Sink, step: int, model, tokenizer, optimizer, metrics: dict, char_tokenizer: bool,
          cfg: SFTConfig, precision: Precision) -> None:  # fmt: skip
    """Every rank agrees on the folder (a collective); rank 0 writes it (all ranks hold the same model
    and optimizer state under DDP); the checkpoint is recorded once."""
    directory = Path(sink.checkpoint_dir(step))
    if distributed.is_rank_zero():
        write_policy(directory, model, tokenizer, char_tokenizer, dtype=precision.save_dtype)
        if cfg.save_optimizer:
            # fp32 master weights too when the model file holds them rounded to bf16 (exact resume)
            master = model if precision.save_dtype != precision.param_dtype else None
            save_optimizer_state(directory, optimizer, master=master)
        write_trainer_state(directory, {"kind": "sft", "step": step, "dtype": precision.name})
    sink.save_checkpoint(step, directory, metrics)


def _datasets(cfg: SFTConfig) -> tuple[list[Example], list[Example]]:
    if cfg.train_dataset is None:
        train_set, eval_set = generated(
            cfg.generated_train, cfg.generated_eval, cfg.seed, cfg.generated_slip_fraction
        )
    else:
        train_set = read_problems(cfg.train_dataset, need_solution=True)
        eval_set = []
    if cfg.eval_dataset is not None:
        eval_set = read_problems(cfg.eval_dataset, need_solution=False)
    return train_set, eval_set


def train(cfg: SFTConfig, sink: Sink) -> dict:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    distributed.init()  # no-op in one process, or when the launcher's entry point joined already
    precision = resolve_precision(cfg.dtype, cfg.engine)
    resume = Path(sink.resume_from) if sink.resume_from is not None else None
    if resume is None and distributed.is_rank_zero():  # "tiny" is built once, by rank 0, read by all
        resolve_model_path(cfg.model_path, Path(sink.workdir), cfg.seed)
    distributed.barrier()
    model_dir = resume or resolve_model_path(cfg.model_path, Path(sink.workdir), cfg.seed)
    model, tokenizer = load_policy(model_dir, dtype=precision.param_dtype, device=precision.device)
    chat.check_mode(tokenizer, cfg.chat_template)
    char_tok = is_char_tokenizer_dir(model_dir)
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    model.train()

    train_set, eval_set = _datasets(cfg)
    encoded = [encode_example(tokenizer, ex, cfg.max_length, cfg.chat_template) for ex in train_set]

    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    forward: torch.nn.Module = SFTLogprobs(model)
    dummy = None
    if distributed.world_size() > 1:  # DDP averages the gradients; the losses are scaled for that
        forward = torch.nn.parallel.DistributedDataParallel(
            forward, device_ids=[torch.cuda.current_device()] if precision.device.type == "cuda" else None,
            broadcast_buffers=False,  # constant buffers (rotary tables): a forward does no collective
        )  # fmt: skip
        dummy = encoded[0]
    start = 0
    if resume is not None:
        state = read_trainer_state(resume)
        if state is not None:
            start = int(state["step"]) + 1
        load_optimizer_state(resume, optimizer, master=model, map_location=precision.device)

    def evaluate() -> float:
        if not eval_set:
            return float("nan")
        accuracy = None
        if distributed.is_rank_zero():  # rank 0 evaluates; the others wait at the broadcast
            accuracy = greedy_accuracy(
                model,
                tokenizer,
                eval_set,
                cfg.max_new_tokens,
                chat_template=cfg.chat_template,
                precision=precision,
            )
        return distributed.broadcast_object(accuracy)

    rng = random.Random(cfg.seed)
    order: list[int] = []
    # Data order depends only on (seed, step): a resumed run sees the batches it would have seen.
    for _ in range(start):
        order = _next_batch(order, rng, len(encoded), cfg.batch_size)[1]
    if start == 0 and cfg.eval_every:
        sink.log(0, {"eval/accuracy": evaluate()})
    step = start
    metrics: dict[str, float] = {}
    for step in range(start, cfg.steps):
        if sink.should_stop():
            if not cfg.checkpoint_every or step % cfg.checkpoint_every != 0:  # else just saved
                _save(sink, step - 1, model, tokenizer, optimizer, {}, char_tok, cfg, precision)
            return {"stopped": True, "step": step - 1}
        tic = time.perf_counter()
        if precision.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(precision.device)
        idx, order = _next_batch(order, rng, len(encoded), cfg.batch_size)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        optimizer.zero_grad(set_to_none=True)
        result = accumulate_gradients(
            model,
            [encoded[i] for i in distributed.shard(idx)],  # this rank's share of the global batch
            tokenizer.pad_token_id,
            micro_batch_tokens=cfg.micro_batch_tokens,
            precision=precision,
            forward=forward,
            dummy=dummy,
        )
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        metrics = {
            "train/loss": result.loss,
            "train/token_accuracy": result.token_accuracy,
            "train/grad_norm": float(grad_norm),
            "train/lr": lr_at(step, cfg),
            "train/micro_batches": float(result.micro_batches),
            "train/tokens_per_s": result.tokens / (time.perf_counter() - tic),
        }
        peak = peak_memory_bytes(precision.device)
        if peak is not None:
            metrics["memory/peak_gb"] = peak / 2**30
        last = step == cfg.steps - 1
        if eval_set and ((cfg.eval_every and (step + 1) % cfg.eval_every == 0) or last):
            metrics["eval/accuracy"] = evaluate()
        sink.log(step + 1, metrics)
        if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 and not last:
            _save(sink, step, model, tokenizer, optimizer, {"train/loss": metrics["train/loss"]}, char_tok,
                  cfg, precision)  # fmt: skip
    final = {k: metrics[k] for k in ("train/loss", "eval/accuracy") if k in metrics}
    _save(sink, step, model, tokenizer, optimizer, final, char_tok, cfg, precision)
    return {"stopped": False, "step": step, **final}


def _next_batch(order: list[int], rng: random.Random, n: int, size: int) -> tuple[list[int], list[int]]:
    if len(order) < size:
        fresh = list(range(n))
        rng.shuffle(fresh)
        order = order + fresh
    return order[:size], order[size:]
