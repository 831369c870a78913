"""The Bradley-Terry reward-model trainer: ``train(config, sink) -> summary``.

What it is (Skywork-Reward, arXiv 2410.18451, seeds-spec 3.1): a transformer with a scalar head read
at the last token of the chat-templated (prompt, response); for each preference pair the loss is
``-log sigmoid(r(x, y_c) - r(x, y_r) [- margin])``, averaged over the batch. Chosen and rejected go
through ONE forward (concatenated along the batch), right-padded; pooling follows the attention mask.
AdamW (no decay on biases and norms), gradient clipping at 1.0, linear warmup then cosine or constant.

Memory (issue 10): the global batch of an optimizer step (batch_size x grad_accum pairs) is cut into
forwards of at most ``batch_size`` pairs and ``micro_batch_tokens`` tokens (pairs of similar lengths
together; a pair's two sides always in the same forward), each micro-batch's loss weighted by its share
of the step's pairs and its gradient accumulated: loss and gradient are the pair mean of the whole step
however it is split. ``dtype``: fp32 weights and AdamW state with bf16 autocast on the torch engine
(bf16 by default on CUDA), DeepSpeed's bf16 mode on the deepspeed engine; ``gradient_checkpointing``
recomputes the backbone's activations.

Several ranks (``nproc_per_node`` x ``nodes``, started by torch.distributed's launcher; the sink is a
RankZeroSink, trainers.common.distributed): every rank knows the step's global batch (the schedule is a
function of the step) and takes its contiguous share, cut into forwards as above; each micro-batch's
weight is its share of the whole step's pairs times the world size (DDP and DeepSpeed average the
gradients), so the averaged gradient is the one-process pair mean. Ranks pad their forward/backward
passes to the same count with a zero-loss pass (DDP and ZeRO communicate in each), and the step's
statistics are gathered from all ranks. Rank 0 logs and writes the model and the torch optimizer
state; every rank writes its part of DeepSpeed's checkpoint; every rank resumes from it. The torch
engine evaluates on rank 0; under DeepSpeed every rank scores the eval set (ZeRO-3 gathers parameters
in each forward) and rank 0 logs. On the CPU, 2 gloo ranks give the one-process losses (tests/trainers).

Where it departs from the paper, or the paper is silent: the paper's lr, epochs, batch size and
max length are unknown ([U]); the defaults are starting points. The data-selection pipeline (ArmoRM
ranking, the WildGuard filter, seeds-spec 3.2) happens before this trainer: it trains on the pairs it
is given. Each epoch drops the ``n mod (batch_size x grad_accum)`` pairs that do not fill a last
optimizer step (a different few each epoch, as the order is reshuffled per epoch).

Logged per optimizer step k (k = 1, 2, ...): ``train/loss``, ``train/accuracy``,
``train/margin_mean``, ``train/{chosen,rejected}_reward_{mean,std}``, ``train/grad_norm`` (before
clipping), ``train/lr`` (used in step k), ``train/tokens_per_s`` and ``train/pairs_per_s`` (wall time
of the step, data included), ``train/epoch``, ``data/{chosen,rejected}_len_mean`` and
``data/truncated_ratio`` (this step's pairs), ``train/micro_batches``, and ``memory/peak_gb`` (the
step's peak of torch.cuda.max_memory_allocated; CUDA only). At step 0, the whole training set's ``data/train_*``
(and ``data/eval_*``). With an eval set, at step 0 (before training), every ``eval_every`` steps and
at the end: ``eval/loss``, ``eval/accuracy``, ``eval/margin_mean``, ``eval/subset/<source>`` for each
source, and for RewardBench subset names ``eval/section/{chat,chat_hard,safety,reasoning}`` and, when
all four sections are present, ``eval/overall`` (trainers.reward.rewardbench).

Checkpoints (every ``checkpoint_every`` steps, on a stop, and at the end) go to
``sink.checkpoint_dir(step)`` (trainers.common.checkpoints): the model in the training dtype
(safetensors) + config + tokenizer + reward_model.json, which trainers.reward.score loads, and the
training state: trainer_state.json, plus with ``save_optimizer`` optimizer.pt (AdamW, scheduler, RNG,
and the fp32 master weights when the model file is bf16) or DeepSpeed's own checkpoint under
deepspeed/. A resume from a checkpoint without optimizer state starts a fresh AdamW. With
``sink.resume_from`` the run continues at the step after the checkpoint, on the same data order, and
on the CPU logs what the uninterrupted run would have logged.

Run it from the command line with ``python -m trainers.reward --config cfg.yaml``.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainers.base import Sink
from trainers.common import deepspeed_glue, distributed
from trainers.common.checkpoints import (
    STATE_FILE,
    load_optimizer_state,
    read_trainer_state,
    save_optimizer_state,
    write_trainer_state,
)
from trainers.common.data import (
    EncodedPairs,
    PreferenceEncoder,
    PreferenceRow,
    length_stats,
    read_preference_jsonl,
)
from trainers.common.model_roots import model_directory
from trainers.common.models import seed_everything
from trainers.common.policy_step import DeepSpeedStepper, TorchStepper
from trainers.common.precision import enable_gradient_checkpointing, peak_memory_bytes, resolve_precision
from trainers.common.tiny import build_tiny_model, is_char_tokenizer_dir
from trainers.common.token_batching import split_by_token_budget
from trainers.reward.config import TINY, RewardConfig
from trainers.reward.evaluation import (
    INTERVAL_RESAMPLES,
    INTERVAL_SEED,
    accuracy_intervals,
    collate,
    eval_metrics,
    score_encoded,
)
from trainers.reward.losses import bt_loss, pair_stats
from trainers.reward.model import build_reward_model

GRAD_CLIP = 1.0
STATE_JSON = STATE_FILE
DEEPSPEED_DIR = "deepspeed"
DEEPSPEED_TAG = "state"


# --- setup -------------------------------------------------------------------------------------------


def run_workdir(sink: Sink) -> Path:
    """Where the run may write files besides checkpoints (the tiny base model)."""
    for attr in ("workdir", "artifact_dir"):
        value = getattr(sink, attr, None)
        if value:
            return Path(value)
    return Path(tempfile.mkdtemp(prefix="orlab-reward-"))


def base_model_dir(config: RewardConfig, sink: Sink) -> Path:
    if config.model_path == TINY:
        target = run_workdir(sink) / f"tiny-base-seed{config.seed}"
        if (target / "config.json").is_file():  # built already (by rank 0: the same seeded weights)
            return target
        return build_tiny_model(target, seed=config.seed)
    path = model_directory(config.model_path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"model_path {path} is not a local Hugging Face model directory (no config.json)"
        )
    return path


def load_rows(ref: int | str, field: str) -> list[PreferenceRow]:
    if isinstance(ref, int):
        raise ValueError(
            f"{field}={ref} is a dataset id: the platform exports it to a JSONL path before training"
        )
    return read_preference_jsonl(ref)


class Schedule:
    """Which pairs each optimizer step uses: epoch e is a permutation seeded by (seed, e), cut into
    global batches of batch_size x grad_accum pairs (the remainder is dropped), each cut into
    grad_accum micro-batches. A function of the step alone, so a resumed run sees the same data."""

    def __init__(self, n_pairs: int, config: RewardConfig):
        self.n = n_pairs
        self.seed = config.seed
        self.batch_size = config.batch_size
        self.grad_accum = config.grad_accum
        self.global_batch = config.batch_size * config.grad_accum
        self.steps_per_epoch = n_pairs // self.global_batch
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"train_dataset has {n_pairs} pairs, fewer than one optimizer step needs "
                f"(batch_size x grad_accum = {self.global_batch})"
            )
        total = config.epochs * self.steps_per_epoch
        self.total_steps = min(total, config.max_steps) if config.max_steps else total
        self.warmup_steps = round(config.warmup_ratio * self.total_steps)
        self._perm: tuple[int, np.ndarray] | None = None

    def epoch_of(self, step: int) -> int:
        return (step - 1) // self.steps_per_epoch

    def micro_batches(self, step: int) -> list[list[int]]:
        """Pair indices of the micro-batches of optimizer step ``step`` (1-based)."""
        epoch = self.epoch_of(step)
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, epoch]).permutation(self.n))
        j = (step - 1) % self.steps_per_epoch
        chunk = self._perm[1][j * self.global_batch : (j + 1) * self.global_batch].tolist()
        return [chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]


def lr_lambda(total_steps: int, warmup_steps: int, kind: str) -> Callable[[int], float]:
    """Multiplier of the peak lr for the update after ``done`` updates: linear warmup from
    1/warmup to 1, then cosine to 0 at ``total_steps`` (never exactly 0 for a step taken) or flat."""

    def factor(done: int) -> float:
        if done < warmup_steps:
            return (done + 1) / warmup_steps
        if kind == "constant":
            return 1.0
        progress = (done - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def build_optimizer(model: torch.nn.Module, config: RewardConfig) -> torch.optim.AdamW:
    """AdamW, with no decay on biases and norms. The plain loop uses the fused kernel (CPU and CUDA;
    about 4x faster than foreach on the tiny model); under DeepSpeed the ZeRO wrapper steps it, so
    the default implementation is kept there."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    fused = config.engine == "torch" and all(p.dtype == torch.float32 for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.999), eps=1e-8, fused=fused or None)


# --- checkpoints -------------------------------------------------------------------------------------


def _geometry(config: RewardConfig, n_train: int) -> dict[str, Any]:
    """What must not change between a checkpoint and its resume (else the data order would)."""
    return {
        "n_train": n_train,
        "batch_size": config.batch_size,
        "grad_accum": config.grad_accum,
        "seed": config.seed,
    }


def read_state(directory: Path) -> dict[str, Any]:
    state = read_trainer_state(directory)
    if state is None:
        raise FileNotFoundError(f"resume_from {directory} is not a reward-model checkpoint (no {STATE_JSON})")
    return state


# --- one optimizer step ----------------------------------------------------------------------------------


def pair_micro_batches(
    enc: EncodedPairs, slices: list[list[int]], micro_batch_tokens: int
) -> list[list[int]]:
    """The pairs of each slice (at most ``batch_size`` pairs) grouped into forwards of at most
    ``micro_batch_tokens`` tokens: a pair is two rows as wide as its longer side, so a group of k pairs
    of width w costs 2 k w. A pair wider than the budget gets a forward of its own."""
    out = []
    for pairs in slices:
        widths = [max(len(enc.chosen[i]), len(enc.rejected[i])) for i in pairs]
        out += [
            [pairs[j] for j in group]
            for group in split_by_token_budget(widths, max(1, micro_batch_tokens // 2))
        ]
    return out


@dataclass
class PairStep:
    loss: float  # the pair mean of the step
    chosen: torch.Tensor  # rewards, detached, in micro-batch order
    rejected: torch.Tensor
    tokens: int  # real tokens of both sides


def accumulate_pairs(
    forward: Callable[..., torch.Tensor],
    stepper: TorchStepper | DeepSpeedStepper,
    enc: EncodedPairs,
    micro: list[list[int]],
    pad_id: int,
    device: torch.device,
    *,
    margin: float | None,
    autocast: Callable[[], Any],
) -> PairStep:
    """Forward and backward of every micro-batch of one optimizer step; gradients accumulate (the
    stepper's optimizer step is the caller's). Each micro-batch's Bradley-Terry mean is weighted by its
    share of the step's pairs, so the sum is the un-split step's pair mean.

    Several ranks: ``micro`` holds this rank's share of the step; the pair count is summed over the
    ranks and every weight multiplied by the world size (DDP and DeepSpeed average the gradients);
    passes over pair 0 with a zero loss pad this rank's passes to the most any rank makes (DDP and ZeRO
    communicate in every backward). The returned loss, rewards and tokens are the whole step's (the
    rewards gathered in rank order)."""
    world = distributed.world_size()
    total = distributed.all_reduce_sum(float(sum(len(idx) for idx in micro)))
    passes: list[list[int] | None] = list(micro)
    if world > 1:
        passes += [None] * (int(distributed.all_reduce_max(float(len(micro)))) - len(micro))
    loss_sum, chosen, rejected, tokens = 0.0, [], [], 0
    for k, idx in enumerate(passes):
        ids, mask = collate(enc, idx if idx is not None else [0], pad_id, device)
        with autocast():
            rewards = forward(ids, mask)
        n = len(idx) if idx is not None else 1
        rc, rr = rewards[:n], rewards[n:]
        if idx is None:  # a pass that only keeps this rank in step with the others
            stepper.backward(bt_loss(rc, rr, margin) * 0.0, k == len(passes) - 1)
            continue
        loss = bt_loss(rc, rr, margin) * (len(idx) / total)
        stepper.backward(loss * world, k == len(passes) - 1)
        loss_sum += float(loss.detach())
        chosen.append(rc.detach().float())
        rejected.append(rr.detach().float())
        tokens += int(mask.sum())
    chosen_t = torch.cat(chosen) if chosen else torch.zeros(0)
    rejected_t = torch.cat(rejected) if rejected else torch.zeros(0)
    if world > 1:
        sums = distributed.all_reduce_sums({"loss": loss_sum, "tokens": float(tokens)})
        loss_sum, tokens = sums["loss"], int(sums["tokens"])
        chosen_t = torch.tensor(distributed.gather_lists(chosen_t.cpu().tolist()), dtype=torch.float32)
        rejected_t = torch.tensor(distributed.gather_lists(rejected_t.cpu().tolist()), dtype=torch.float32)
    return PairStep(loss_sum, chosen_t, rejected_t, tokens)


# --- the loop ----------------------------------------------------------------------------------------


def train(config: RewardConfig, sink: Sink) -> dict[str, Any]:
    """Train to the end or until ``sink.should_stop()``. Returns {"steps", "stopped", "checkpoint",
    "train_loss", "eval_accuracy" (when evaluated), "pairs_per_s" (mean over steps after the first)}."""
    precision = resolve_precision(config.dtype, config.engine)
    device = precision.device
    if device.type == "cpu" and config.threads:
        torch.set_num_threads(config.threads)
    seed_everything(config.seed)
    distributed.init()  # no-op in one process, or when the launcher's entry point joined already

    resume = (
        Path(sink.resume_from) if sink.resume_from is not None and Path(sink.resume_from).is_dir() else None
    )
    saved = read_state(resume) if resume else None
    if resume is None and distributed.is_rank_zero():  # "tiny" is built once, by rank 0, read by all
        base_model_dir(config, sink)
    distributed.barrier()
    model_dir = resume if resume else base_model_dir(config, sink)
    char_tokenizer = is_char_tokenizer_dir(model_dir)
    model, tokenizer = build_reward_model(
        model_dir,
        config.head,
        attn_implementation=config.attn_implementation,
        dtype=precision.param_dtype,
        device=device,
    )
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(model.backbone())
    model.train()
    pad_id = tokenizer.pad_token_id

    encoder = PreferenceEncoder(tokenizer, config.max_length, config.chat_template)
    train_enc = encoder.encode(load_rows(config.train_dataset, "train_dataset"))
    eval_enc = encoder.encode(load_rows(config.eval_dataset, "eval_dataset")) if config.eval_dataset else None
    schedule = Schedule(len(train_enc), config)
    geometry = _geometry(config, len(train_enc))
    if saved is not None and saved.get("geometry") != geometry:
        raise ValueError(
            f"checkpoint {resume} was trained with {saved.get('geometry')}, this config has {geometry}"
        )

    optimizer = build_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(schedule.total_steps, schedule.warmup_steps, config.scheduler)
    )
    engine = None
    if config.engine == "deepspeed":
        # One accumulation step in DeepSpeed's terms: the micro-batches are ours (token budget), the
        # boundary flag closes them (DeepSpeedStepper).
        engine = deepspeed_glue.initialize(
            model,
            optimizer,
            scheduler,
            device=device,
            micro_batch=schedule.global_batch,
            grad_accum=1,
            zero_stage=config.zero_stage,
            grad_clip=GRAD_CLIP,
            bf16=precision.compute_dtype == torch.bfloat16,
        )
        forward: Callable[..., torch.Tensor] = engine
        stepper: TorchStepper | DeepSpeedStepper = DeepSpeedStepper(engine)
        zero_stage = config.zero_stage
    else:
        forward = model
        if distributed.world_size() > 1:  # DDP averages the gradients; the losses are scaled for that
            forward = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None,
                broadcast_buffers=False,  # constant buffers (rotary tables): a forward does no collective
            )  # fmt: skip
        stepper = TorchStepper(model, optimizer, GRAD_CLIP)
        zero_stage = 0
    autocast = precision.autocast  # bf16 autocast on the torch engine; DeepSpeed's bf16 needs none

    start = 0
    last: dict[str, Any] = {"eval": None, "checkpoint": None, "loss": float("nan")}
    if saved is not None:
        start = int(saved["step"])
        last["checkpoint"] = (start, str(resume))  # what a resume with nothing left to do returns
        if engine is not None:
            if (resume / DEEPSPEED_DIR).is_dir():
                engine.load_checkpoint(str(resume / DEEPSPEED_DIR), tag=DEEPSPEED_TAG)
        else:
            master = model if precision.save_dtype != precision.param_dtype else None
            state = load_optimizer_state(resume, optimizer, master=master)
            if state is not None:
                scheduler.load_state_dict(state["scheduler"])
                torch.set_rng_state(state["rng"])
            else:  # no optimizer state saved: a fresh AdamW, the schedule where the run left it
                for _ in range(start):
                    scheduler.step()
    eval_batch = max(2 * config.batch_size, 1)

    def run_eval(step: int) -> None:
        model.eval()
        if engine is not None:
            engine.eval()
        accuracy = None
        # rank 0 scores with the plain model; DeepSpeed's every rank (ZeRO-3 gathers in each forward)
        if distributed.is_rank_zero() or engine is not None:
            rc, rr = score_encoded(forward if engine is not None else model, eval_enc, eval_batch, pad_id,
                                   device, autocast)  # fmt: skip
            metrics = eval_metrics(rc, rr, eval_enc.sources, config.margin)
            accuracy = metrics["eval/accuracy"]
            sink.log(step, metrics)  # a RankZeroSink drops the other ranks' calls
            # Also as a benchmark result with its protocol, so the run page's and the compare page's
            # evaluation charts show reward models beside policies (accuracy, sections, overall).
            # Each accuracy with its 95 % bootstrap interval over pairs ("<name>_ci"), drawn as a band.
            held_out = {k.removeprefix("eval/"): v for k, v in metrics.items() if k != "eval/loss"}
            held_out.update(accuracy_intervals(rc, rr, eval_enc.sources))
            sink.log_evaluation(
                step,
                "eval_dataset",
                held_out,
                {"k": 1, "metric": "pairwise accuracy (r_chosen > r_rejected)", "pairs": len(eval_enc),
                 "max_length": config.max_length, "sections": "RewardBench (seeds-spec 3.3)",
                 "interval": {"level": 0.95, "method": "percentile bootstrap over pairs, stratified by "
                              "source", "resamples": INTERVAL_RESAMPLES, "seed": INTERVAL_SEED}},
            )  # fmt: skip
        last["eval"] = (step, distributed.broadcast_object(accuracy))
        model.train()
        if engine is not None:
            engine.train()

    def checkpoint(step: int, metrics: dict[str, float]) -> None:
        # every rank agrees on the folder; rank 0 writes what all ranks hold alike (the model, the torch
        # optimizer), every rank its part of DeepSpeed's partitioned state; recorded once
        directory = Path(sink.checkpoint_dir(step))
        writer = distributed.is_rank_zero()
        meta = {"max_length": config.max_length, "step": step, "base_model": config.model_path,
                "chat_template": config.chat_template, "dtype": precision.name}  # fmt: skip
        with deepspeed_glue.full_parameters(model, zero_stage):  # a collective under ZeRO-3
            if writer:
                model.save(
                    directory, tokenizer, meta, char_tokenizer=char_tokenizer, dtype=precision.save_dtype
                )
        if config.save_optimizer:
            if engine is not None:
                engine.save_checkpoint(str(directory / DEEPSPEED_DIR), tag=DEEPSPEED_TAG)
            elif writer:
                master = model if precision.save_dtype != precision.param_dtype else None
                extra = {"scheduler": scheduler.state_dict(), "rng": torch.get_rng_state()}
                save_optimizer_state(directory, optimizer, master=master, extra=extra)
        state = {
            "step": step,
            "engine": config.engine,
            "total_steps": schedule.total_steps,
            "geometry": geometry,
        }
        if writer:
            write_trainer_state(directory, state)
        sink.save_checkpoint(step, directory, metrics)
        last["checkpoint"] = (step, str(directory))

    if start == 0:
        data = {f"data/train_{k}": v for k, v in length_stats(train_enc).items()}
        data.update({"data/train_pairs": len(train_enc), "data/steps_total": schedule.total_steps})
        if eval_enc is not None:
            data.update({f"data/eval_{k}": v for k, v in length_stats(eval_enc).items()})
            data["data/eval_pairs"] = len(eval_enc)
        sink.log(0, data)
        if eval_enc is not None:
            run_eval(0)

    speeds: list[float] = []
    stopped = False
    step = start
    for step in range(start + 1, schedule.total_steps + 1):
        t0 = time.perf_counter()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        # this rank's share of the step's pairs, in forwards of at most batch_size pairs (all of them in
        # one process: the schedule's own slices)
        step_pairs = [i for idx in schedule.micro_batches(step) for i in idx]
        mine = distributed.shard(step_pairs)
        slices = [mine[i : i + config.batch_size] for i in range(0, len(mine), config.batch_size)]
        micro = pair_micro_batches(train_enc, slices, config.micro_batch_tokens)
        lr = engine.get_lr()[0] if engine is not None else scheduler.get_last_lr()[0]
        stepper.begin()
        result = accumulate_pairs(
            forward, stepper, train_enc, micro, pad_id, device, margin=config.margin, autocast=autocast
        )
        grad_norm = stepper.step()
        if engine is None:
            scheduler.step()
        elapsed = time.perf_counter() - t0
        pairs = len(step_pairs)
        stats = pair_stats(result.chosen, result.rejected)
        batch_data = length_stats(train_enc, step_pairs)
        metrics = {
            "train/loss": result.loss,
            **{f"train/{k}": v for k, v in stats.items()},
            "train/grad_norm": grad_norm,
            "train/lr": lr,
            "train/tokens_per_s": result.tokens / elapsed,
            "train/pairs_per_s": pairs / elapsed,
            "train/micro_batches": distributed.all_reduce_sum(float(len(micro))),  # all ranks'
            "train/epoch": step / schedule.steps_per_epoch,
            "data/chosen_len_mean": batch_data["chosen_len_mean"],
            "data/rejected_len_mean": batch_data["rejected_len_mean"],
            "data/truncated_ratio": batch_data["truncated_ratio"],
        }
        peak = peak_memory_bytes(device)
        if peak is not None:
            metrics["memory/peak_gb"] = peak / 2**30
        sink.log(step, metrics)
        last["loss"] = result.loss
        if step > start + 1:
            speeds.append(pairs / elapsed)
        if eval_enc is not None and config.eval_every and step % config.eval_every == 0:
            run_eval(step)
        if config.checkpoint_every and step % config.checkpoint_every == 0:
            checkpoint(step, {"train/loss": result.loss})
        if sink.should_stop():
            stopped = True
            break

    if step > start or saved is None:
        if eval_enc is not None and not stopped and (last["eval"] is None or last["eval"][0] != step):
            run_eval(step)
        if last["checkpoint"] is None or last["checkpoint"][0] != step:
            checkpoint(step, {"train/loss": last["loss"]})
    summary: dict[str, Any] = {
        "steps": step,
        "stopped": stopped,
        "checkpoint": last["checkpoint"][1] if last["checkpoint"] else None,
        "train_loss": last["loss"] if math.isfinite(last["loss"]) else None,
        "pairs_per_s": sum(speeds) / len(speeds) if speeds else None,
    }
    if last["eval"] is not None:
        summary["eval_accuracy"] = last["eval"][1]
    return summary
