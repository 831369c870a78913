"""Skywork-OR1 / MAGIC: GRPO for long chain-of-thought with verifiable rewards.

    python -m trainers.rl --config cfg.yaml

One step (seeds-spec 1.4): take the next prompts of a shuffled pass over the training set (without
replacement, OR1's drop_last sampler), n rollouts each at temperature 1.0, score them with the verifiers in
a separate process pool (math-verify; code in the sandbox), group statistics, reject all-0/all-1 groups,
group-normalised advantages, recompute the rollout log-probs with the training model, ``ppo_epochs x
mini_batches`` updates of the token-level PPO-clip loss with the adaptive entropy bonus (one update =
on-policy, the recipe), then update the entropy controller with the sampled entropy of the filtered batch.
Departures from the original code (README has the list): the entropy controller's state is saved in
checkpoints; the loss is the exact global token mean unless ``algo.loss_agg = verl_compat``; the online
filter drops prompts solved n/n in the previous stage at each stage switch (the paper's rule; not in the
repo).

Prompts are rendered with the model's chat template (``chat_template``; trainers.common.chat) and reach the
rollout engine as token ids; training prompts longer than ``rollout.max_prompt`` rendered tokens are dropped
at load. Each mini-batch's update runs in token-budget micro-batches (``micro_batch_tokens``;
trainers.rl.update) whose accumulated loss and gradients equal the un-split update's.

Precision (trainers.common.precision): ``dtype: auto`` is bf16 on CUDA, fp32 on the CPU. The torch engine
keeps fp32 parameters and AdamW state and runs forward and backward under bf16 autocast; the torch sampler
samples under the same autocast. DeepSpeed runs its bf16 mode (a bf16 module, fp32 master weights in its
optimizer). A reference model (``kl_coef > 0``) is held in the compute dtype without gradients. Checkpoints
are written in the training dtype (trainers.common.checkpoints), the optimizer state beside them only with
``save_optimizer`` (with the fp32 master weights when the model was written in bf16, so a resume is exact).

Training engines: ``engine: torch`` steps a torch AdamW; ``engine: deepspeed`` wraps the same AdamW in
DeepSpeed ZeRO (``zero_stage``; gloo on the CPU, NCCL on GPUs; trainers.common.deepspeed_glue) with the
clip in DeepSpeed's config, so both compute the same update. Under ZeRO-3 the parameters are partitioned:
checkpoints gather them first, and the torch sampler samples from a dense copy (in the compute dtype) that
each weight sync refreshes (as vLLM's copy is refreshed). A DeepSpeed checkpoint keeps DeepSpeed's own
optimizer state under ``deepspeed/`` beside the loadable model; resume it with the same engine and stage.

Several ranks (``nproc_per_node`` x ``nodes``, started by torch.distributed's launcher; the sink is a
RankZeroSink, trainers.common.distributed): each rank rolls out and scores a contiguous share of the step's
prompts (seeds per (step, prompt, sample), so the rollouts do not depend on the world size); the per-sample
numbers (reward, truncation, length) are gathered, so statistics, filters, advantages and the prompt
bookkeeping are the one-process ones on every rank; each rank updates on its rows of every mini-batch with
the loss weights of the whole mini-batch (the OR1 global token mean over all ranks' tokens) times the
world size, and DDP (engine torch) or DeepSpeed ZeRO-2/3 averages the gradients. Ranks pad their forward and
backward passes to the same count with a zero-weight row (DDP and ZeRO communicate in each). Rank 0
evaluates and writes the model and torch optimizer files; DeepSpeed writes its partitions from every rank.
With ``mini_batches > 1`` the mini-batch partition is rank 0's draw, which is one process's only when rank
0's torch random stream is (not checked).

Samples (issue 14; trainers.common.sample_record): each step logs whole groups, the first
``sample_groups_per_step`` of its prompts (a shuffled draw; "all" in the demo), every completion with its
reward, reward components, advantage, verdict, extracted and expected answer, finish reason, length,
group and member index, and ``group_status``: what the filter decided (kept, or why not: solved_all,
unsolved_all, zero_variance). The first ``token_stats_groups_per_step`` of them carry per-token arrays:
character offsets, and the trainer's log-probs and entropies at the rollout temperature from one
no-gradient forward over those rows before the update (the sampling policy; its cost is reported as
``timing_s/log_samples``), and under vLLM the engine's own log-probs. Every evaluation logs the rollouts
of the first ``eval.sample_problems`` evaluation problems (phase eval), the same problems each time."""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections import defaultdict
from pathlib import Path

import torch

from trainers.base import Sink
from trainers.common import deepspeed_glue, distributed
from trainers.common.chat import check_mode, render_prompt_text
from trainers.common.chat import prompt_ids as render_prompt_ids
from trainers.common.checkpoints import (
    load_optimizer_state,
    read_trainer_state,
    save_optimizer_state,
    write_policy,
    write_trainer_state,
)
from trainers.common.engines import make_engine
from trainers.common.models import load_policy, resolve_model_path, seed_everything
from trainers.common.policy_step import DeepSpeedStepper, PolicyLogprobs, TorchStepper
from trainers.common.precision import (
    enable_gradient_checkpointing,
    inference_precision,
    peak_memory_bytes,
    resolve_precision,
)
from trainers.common.rewards import RewardPool
from trainers.common.rollout import ChatTemplateEngine, TorchSampler
from trainers.common.rollout_batch import build_batch
from trainers.common.sample_record import (
    group_status,
    groups_to_log,
    rollout_sample,
    token_arrays,
    token_offsets,
)
from trainers.common.sandbox_record import sandbox_record
from trainers.common.tiny import is_char_tokenizer_dir
from trainers.eval import report
from trainers.eval.core import evaluate, load_problems
from trainers.rl.config import RLConfig
from trainers.rl.core import EntropyController, group_advantages, informative_groups
from trainers.rl.prompts import EpochSampler, read_pass_rates, step_seed, within_max_prompt
from trainers.rl.update import batch_logprobs, batch_logprobs_and_entropy, shared_weights, update_minibatch

SELF_REFLECTION = (
    "rethink",
    "recheck",
    "double check",
    "try again",
    "re-evaluate",
    "check again",
    "let's check",
)
DEEPSPEED_DIR = "deepspeed"
DEEPSPEED_TAG = "state"


def rollout_model_len(cfg: RLConfig) -> int:
    """vLLM's context for this run: ``max_prompt`` (longer prompts are dropped) plus the longest response
    of the stages the run reaches."""
    from trainers.common import vllm_engine

    stages = [(s.until_step, s.max_response) for s in cfg.rollout.stages]
    return vllm_engine.max_model_len(
        cfg.rollout.max_prompt, vllm_engine.reachable_stage_lengths(stages, cfg.steps + 1)
    )


def stage_at(cfg: RLConfig, step: int) -> tuple[int, int]:
    for i, stage in enumerate(cfg.rollout.stages):
        if step < stage.until_step:
            return i, stage.max_response
    return len(cfg.rollout.stages) - 1, cfg.rollout.stages[-1].max_response


def sampler_logprobs(flat, rows: list[int], shape: torch.Size) -> torch.Tensor:
    """The rollout engine's log-probs of the sampled tokens, laid out like a batch built from the same
    rows (position t predicts token t+1), 0 elsewhere."""
    out = torch.zeros(shape, dtype=torch.float32)
    for r, i in enumerate(rows):
        c = flat[i][1]
        start = len(c.prompt_ids) - 1
        out[r, start : start + len(c.completion_ids)] = torch.tensor(c.logprobs, dtype=torch.float32)
    return out


class Trainer:
    def __init__(self, cfg: RLConfig, sink: Sink):
        self.cfg, self.sink = cfg, sink
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        seed_everything(cfg.seed)
        distributed.init()  # no-op in one process, or when the launcher's entry point joined already
        self.precision = resolve_precision(cfg.dtype, cfg.engine)
        device = self.precision.device
        frozen = inference_precision(cfg.dtype, device)  # models that are never trained: compute dtype
        self.resume = Path(sink.resume_from) if sink.resume_from is not None else None
        if distributed.is_rank_zero():  # "tiny" is built once, by rank 0, and read by all
            resolve_model_path(cfg.model_path, Path(sink.workdir), cfg.seed)
        distributed.barrier()
        self.init_dir = resolve_model_path(cfg.model_path, Path(sink.workdir), cfg.seed)
        self.model_dir = self.resume or self.init_dir
        self.model, self.tokenizer = load_policy(
            self.model_dir, dtype=self.precision.param_dtype, device=device
        )
        check_mode(self.tokenizer, cfg.chat_template)
        if cfg.gradient_checkpointing:
            enable_gradient_checkpointing(self.model)
        self.char_tokenizer = is_char_tokenizer_dir(self.model_dir)
        self.ref = None
        if cfg.algo.kl_coef > 0:  # the starting policy, also after a resume
            ref, _ = load_policy(self.init_dir, dtype=frozen.compute_dtype, device=device)
            self.ref = PolicyLogprobs(ref.requires_grad_(False))
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(),
            lr=cfg.optim.lr,
            betas=cfg.optim.betas,
            weight_decay=cfg.optim.weight_decay,
        )
        # what the rollout engine samples from: the policy itself, except under ZeRO-3 (a dense copy)
        rollout_model = self.model
        self.ds = None
        self.zero_stage = 0
        if cfg.engine == "deepspeed":
            if cfg.zero_stage == 3:
                rollout_model, _ = load_policy(self.model_dir, dtype=frozen.compute_dtype, device=device)
                rollout_model.requires_grad_(False)
            self.ds = deepspeed_glue.initialize(
                PolicyLogprobs(self.model), self.optimizer, device=device, micro_batch=1, grad_accum=1,
                zero_stage=cfg.zero_stage, grad_clip=cfg.optim.grad_clip,
                bf16=self.precision.compute_dtype == torch.bfloat16,
            )  # fmt: skip
            self.zero_stage = cfg.zero_stage
        # what the losses run through: DeepSpeed's engine (its forward/backward hooks) or the module,
        # in DDP across several ranks (gradients averaged in backward; the losses are scaled for that)
        self.policy = self.ds if self.ds is not None else PolicyLogprobs(self.model)
        # several ranks pad their forward/backward passes to the same count with this row (update.py)
        self.dummy = None
        if distributed.world_size() > 1:
            pad = self.tokenizer.pad_token_id
            self.dummy = build_batch([([pad] * 2, [pad] * 2)], pad).to(device)
            if self.ds is None:
                self.policy = torch.nn.parallel.DistributedDataParallel(
                    self.policy, device_ids=[torch.cuda.current_device()] if device.type == "cuda" else None,
                    broadcast_buffers=False,  # constant buffers (rotary tables): a forward does no collective
                )  # fmt: skip
        self.stepper = (
            DeepSpeedStepper(self.ds)
            if self.ds is not None
            else TorchStepper(self.model, self.optimizer, cfg.optim.grad_clip)
        )
        self.engine = make_engine(
            cfg.rollout.engine, rollout_model, self.tokenizer, self.model_dir,
            compute_dtype=self.precision.compute_dtype, max_model_len=rollout_model_len(cfg),
            gpu_memory_utilization=cfg.rollout.gpu_memory_utilization,
            sync_bucket_mb=cfg.rollout.vllm_sync_bucket_mb,
        )  # fmt: skip
        # the in-run evaluation hands problem text: rendered with the same template as training prompts
        self.eval_engine = ChatTemplateEngine(self.engine, self.tokenizer, cfg.chat_template)
        self.pool = RewardPool(cfg.reward_processes)
        self.train_set = load_problems(
            cfg.train_dataset, cfg.data.generated_train, cfg.seed, eval_split=False
        )
        self.pass_rates = read_pass_rates(cfg.train_dataset)
        self.prompt_ids = [
            render_prompt_ids(self.tokenizer, p.prompt, cfg.chat_template) for p in self.train_set
        ]
        self.active, self.prompts_over_max = within_max_prompt(
            [len(ids) for ids in self.prompt_ids], cfg.rollout.max_prompt
        )
        if not self.active:
            raise ValueError(
                f"every training prompt is longer than rollout.max_prompt ({cfg.rollout.max_prompt} tokens)"
            )
        self.eval_set = load_problems(cfg.eval_dataset, cfg.data.generated_eval, cfg.seed, eval_split=True)
        if cfg.eval.max_problems:
            self.eval_set = self.eval_set[: cfg.eval.max_problems]
        self.solved_all: dict[int, int] = defaultdict(int)  # prompt -> times solved n/n in this stage
        self.controller = EntropyController(
            cfg.entropy.target, cfg.entropy.delta, cfg.entropy.min, cfg.entropy.max, 0.0, True
        )
        self.sampler = EpochSampler(cfg.seed)
        self.start = 0
        self.last_checkpoint: int | None = None
        if self.resume is not None:
            state = read_trainer_state(self.resume)
            if state is not None and state.get("kind") == "rl":
                self._load_state(state)

    # --- state ------------------------------------------------------------------------------------
    def _state(self, step: int) -> dict:
        """Plain JSON: what a resume needs besides the weights and the optimizer."""
        return {
            "kind": "rl",
            "step": step,
            "engine": self.cfg.engine,
            "zero_stage": self.zero_stage,
            "controller": self.controller.state_dict(),
            "prompt_sampler": self.sampler.state_dict(),
            # the mini-batch permutations' generator (a byte tensor) as a list of ints
            "torch_rng": torch.get_rng_state().tolist(),
            "active": self.active,
            "solved_all": {str(k): v for k, v in self.solved_all.items()},
        }

    def _load_state(self, state: dict) -> None:
        saved = (state.get("engine", "torch"), state.get("zero_stage", 0))
        if saved != (self.cfg.engine, self.zero_stage):
            raise ValueError(
                f"checkpoint {self.resume} was trained with engine={saved[0]} zero_stage={saved[1]}, "
                f"this config has engine={self.cfg.engine} zero_stage={self.zero_stage}"
            )
        if self.ds is not None:
            if (self.resume / DEEPSPEED_DIR).is_dir():
                self.ds.load_checkpoint(str(self.resume / DEEPSPEED_DIR), tag=DEEPSPEED_TAG)
        else:
            # the fp32 master weights when the model was written in a lower precision
            master = self.model if self.precision.save_dtype != self.precision.param_dtype else None
            load_optimizer_state(
                self.resume, self.optimizer, master=master, map_location=self.precision.device
            )
        self.controller = EntropyController.from_state(state["controller"])
        self.sampler = EpochSampler.from_state(state["prompt_sampler"])
        torch.set_rng_state(torch.tensor(state["torch_rng"], dtype=torch.uint8))
        self.active = [int(i) for i in state["active"]]
        self.solved_all = defaultdict(int, {int(k): int(v) for k, v in state["solved_all"].items()})
        self.start = int(state["step"]) + 1

    def checkpoint(self, step: int, metrics: dict) -> None:
        if step == self.last_checkpoint:
            return  # a stop right after a periodic checkpoint: nothing new to save
        self.last_checkpoint = step
        save_dtype = self.precision.save_dtype
        # every rank agrees on the folder; rank 0 writes what all ranks hold alike (the model, the torch
        # optimizer), every rank its part of DeepSpeed's partitioned state
        directory = Path(self.sink.checkpoint_dir(step))
        writer = distributed.is_rank_zero()
        with deepspeed_glue.full_parameters(self.model, self.zero_stage):
            if writer:
                write_policy(
                    directory, self.model, self.tokenizer, self.char_tokenizer,
                    dtype=save_dtype if save_dtype != self.precision.param_dtype else None,
                )  # fmt: skip
        if self.cfg.save_optimizer:
            if self.ds is not None:
                self.ds.save_checkpoint(str(directory / DEEPSPEED_DIR), tag=DEEPSPEED_TAG)
            elif writer:
                master = self.model if save_dtype != self.precision.param_dtype else None
                save_optimizer_state(directory, self.optimizer, master=master)
        if writer:
            write_trainer_state(directory, self._state(step))
            (directory / "orlab.json").write_text(json.dumps({"kind": "rl", "step": step}))
        self.sink.save_checkpoint(step, directory, metrics)

    def sync_rollout_weights(self) -> None:
        """Hand the rollout engine the current policy. Under ZeRO-3 the parameters are gathered first;
        the torch sampler then samples from its dense copy, which gets them copied in."""
        self.model.eval()
        if self.zero_stage < 3:
            self.engine.sync_weights(self.model)
            return
        with deepspeed_glue.full_parameters(self.model, 3), torch.no_grad():
            if isinstance(self.engine, TorchSampler):
                full = dict(self.model.named_parameters())
                for name, p in self.engine.model.named_parameters():
                    p.copy_(full[name])
            else:
                self.engine.sync_weights(self.model)

    def autocast(self) -> contextlib.AbstractContextManager:
        return self.precision.autocast()

    # --- data filters -----------------------------------------------------------------------------
    def offline_difficulty_filter(self) -> dict[str, float]:
        """Drop prompts the starting policy solves always or never. A problem with a stored pass rate
        (its dataset row's ``pass_rate``) uses it; the others are estimated by sampling
        ``difficulty_samples`` completions from the starting policy."""
        cfg = self.cfg
        stored = {i: self.pass_rates[i] for i in self.active if i < len(self.pass_rates)}
        stored = {i: r for i, r in stored.items() if r is not None}
        sample = [i for i in self.active if i not in stored]
        rates = dict(stored)
        if sample:
            self.sync_rollout_weights()
            k = cfg.data.difficulty_samples
            mine = distributed.shard(sample)  # each rank estimates its share; all learn every rate
            groups = self.engine.generate(
                [self.prompt_ids[i] for i in mine], n=k, temperature=cfg.rollout.temperature,
                max_new_tokens=cfg.rollout.stages[0].max_response, seed=cfg.seed, prompt_keys=mine,
            )  # fmt: skip
            items = [
                (self.train_set[i].domain, c.completion_text, self.train_set[i].reference)
                for i, g in zip(mine, groups, strict=True)
                for c in g
            ]
            verdicts = self.pool.score_batch(items)
            estimated = [
                (i, sum(v.reward >= 1 for v in verdicts[j * k : (j + 1) * k]) / k) for j, i in enumerate(mine)
            ]
            rates.update(distributed.gather_lists(estimated))
        keep = [i for i in self.active if 0 < rates[i] < 1]
        before = len(self.active)
        self.active = keep or self.active
        return {
            "data/offline_kept": len(keep),
            "data/offline_dropped": before - len(keep),
            "data/offline_stored_pass_rates": len(stored),
        }

    def online_filter(self) -> int:
        """At a stage switch: drop prompts solved n/n during the previous stage."""
        mastered = {i for i, c in self.solved_all.items() if c > 0}
        kept = [i for i in self.active if i not in mastered]
        dropped = len(self.active) - len(kept)
        if kept:
            self.active = kept
        self.solved_all.clear()
        return dropped

    # --- one step ---------------------------------------------------------------------------------
    def step(self, step: int) -> dict[str, float]:
        cfg, tok = self.cfg, self.tokenizer
        device = self.precision.device
        metrics: dict[str, float] = {}
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        stage, max_response = stage_at(cfg, step)
        if step > 0 and stage != stage_at(cfg, step - 1)[0] and cfg.data.online_filter:
            metrics["data/online_dropped"] = self.online_filter()
        k = min(cfg.rollout.prompts_per_step, len(self.active))
        chosen_all = self.sampler.take(self.active, k)
        # each rank rolls out its share of the step's prompts (rank order = the one-process order)
        first_group, end_group = distributed.shard_bounds(k)
        chosen = chosen_all[first_group:end_group]
        problems = [self.train_set[i] for i in chosen]

        t0 = time.perf_counter()
        self.sync_rollout_weights()
        # per-(step, prompt, sample) seeds: the prompt's dataset index keys its samples' noise
        groups = self.engine.generate(
            [self.prompt_ids[i] for i in chosen], n=cfg.rollout.n, temperature=cfg.rollout.temperature,
            top_p=cfg.rollout.top_p, top_k=max(0, cfg.rollout.top_k), max_new_tokens=max_response,
            seed=step_seed(cfg.seed, step), prompt_keys=chosen,
        )  # fmt: skip
        t_gen = time.perf_counter() - t0

        flat = [(gi, c) for gi, g in enumerate(groups) for c in g]
        items = [(problems[gi].domain, c.completion_text, problems[gi].reference) for gi, c in flat]
        t1 = time.perf_counter()
        verdicts = self.pool.score_batch(items)
        t_reward = time.perf_counter() - t1
        # the per-sample numbers of the whole step, on every rank (each rank's are a stretch of them):
        # statistics, filters and advantages are those one process computes
        n = cfg.rollout.n
        numbers = distributed.gather_lists(
            [(v.reward, c.truncated, len(c.completion_ids)) for (_, c), v in zip(flat, verdicts, strict=True)]
        )
        rewards = torch.tensor([r for r, _, _ in numbers], dtype=torch.float32)
        group_ids = torch.arange(k).repeat_interleave(n)
        truncated = torch.tensor([t for _, t, _ in numbers], dtype=torch.bool)
        lengths = torch.tensor([m for _, _, m in numbers], dtype=torch.float32)
        here = slice(first_group * n, end_group * n)  # this rank's samples among them

        # group statistics, before rejection
        per_group = rewards.view(k, n).mean(1)
        for gi, acc in enumerate(per_group.tolist()):
            if acc >= 1.0:
                self.solved_all[chosen_all[gi]] += 1
        metrics.update(
            {
                "batch/solve_none_ratio": float((per_group == 0).float().mean()),
                "batch/solve_all_ratio": float((per_group == 1).float().mean()),
                "reward/mean": float(rewards.mean()),
                "reward/accuracy": float((rewards >= 1).float().mean()),
                "response_length/mean": float(lengths.mean()),
                "response_length/max": float(lengths.max()),
                "response_length/clip_ratio": float(truncated.float().mean()),
                "rollout/tokens_per_s": float(lengths.sum()) / max(t_gen, 1e-9),
                "timing_s/gen": t_gen,
                "timing_s/reward": t_reward,
                "stage": float(stage),
                "stage/max_response": float(max_response),
                "data/active_prompts": float(len(self.active)),
            }
        )
        for b in range(5):
            lo, hi = b / 5, (b + 1) / 5
            sel = (per_group >= lo) & ((per_group < hi) if b < 4 else (per_group <= hi))
            metrics[f"batch/solve_{int(lo * 100):02d}_to_{int(hi * 100)}pct"] = float(sel.float().mean())

        keep = (
            informative_groups(rewards, group_ids)
            if cfg.algo.filter_zero_adv_groups
            else torch.ones_like(truncated)
        )
        metrics["batch/kept_group_ratio"] = float(keep.view(k, n)[:, 0].float().mean())
        adv_all = torch.zeros_like(rewards)
        if keep.any():
            r, g, tr = rewards[keep], group_ids[keep], truncated[keep]
            if cfg.algo.truncated_adv_mask == "before":
                adv = torch.zeros_like(r)
                ok = ~tr
                if ok.any():
                    adv[ok] = group_advantages(r[ok], g[ok], cfg.algo.eps)
            else:
                adv = group_advantages(r, g, cfg.algo.eps)
                if cfg.algo.truncated_adv_mask == "after":
                    adv = torch.where(tr, torch.zeros_like(adv), adv)
            adv_all[keep] = adv
        t_log = time.perf_counter()
        statuses = [group_status(rewards[g * n : (g + 1) * n].tolist(), bool(keep[g * n])) for g in range(k)]
        self._log_samples(step, chosen, flat, verdicts, adv_all[here], first_group, k, statuses)
        metrics["timing_s/log_samples"] = time.perf_counter() - t_log
        if not keep.any():
            metrics["batch/skipped"] = 1.0
            self._log_memory(metrics)
            return metrics

        idx = torch.nonzero(keep[here]).squeeze(-1).tolist()  # this rank's rows of the update
        batch = (
            build_batch([(flat[i][1].prompt_ids, flat[i][1].completion_ids) for i in idx], tok.pad_token_id)
            if idx
            else self.dummy.select(slice(0, 0)).to("cpu")  # nothing kept here: no rows, passes padded
        )
        engine_logp = sampler_logprobs(flat, idx, batch.response_mask.shape)
        batch = batch.to(device)
        advantages = adv_all[here][keep[here]].to(device)
        t2 = time.perf_counter()
        self.model.train()
        budget = cfg.micro_batch_tokens
        # One update on the whole batch (OR1's on-policy setting): the log-probs before the update are
        # those of that update's own forward, detached; a separate no-grad pass would recompute them.
        single_update = cfg.algo.ppo_epochs == 1 and cfg.algo.mini_batches == 1
        old_logp = (
            torch.zeros(batch.response_mask.shape, dtype=torch.float32, device=device)
            if single_update
            else batch_logprobs(
                self.policy,
                batch,
                temperature=cfg.rollout.temperature,
                budget=budget,
                autocast=self.autocast(),
                dummy=self.dummy,
            )
        )
        ref_logp = (
            batch_logprobs(
                self.ref, batch, temperature=cfg.rollout.temperature, budget=budget, autocast=self.autocast()
            )
            if self.ref is not None
            else None
        )
        coef = self.controller.coef if cfg.entropy.adaptive else cfg.entropy.fixed_coef

        # the mini-batches partition the whole step's rows (this rank holds rows offset .. offset+B-1)
        B = len(batch)
        offset, total = distributed.offset_and_total(B)
        row_tokens = distributed.gather_lists(batch.response_mask.sum(-1).tolist()) if self.dummy else None
        mb = max(1, -(-total // cfg.algo.mini_batches))
        stats = defaultdict(list)
        for _ in range(cfg.algo.ppo_epochs):
            perm = torch.randperm(total) if cfg.algo.mini_batches > 1 else torch.arange(total)
            perm = distributed.broadcast_object(perm)  # one partition for all ranks (rank 0's draw)
            for start in range(0, total, mb):
                minibatch = perm[start : start + mb].tolist()
                rows = [g - offset for g in minibatch if offset <= g < offset + B]
                weights = (
                    shared_weights(row_tokens, minibatch, offset, B, cfg.algo.loss_agg, device)
                    if self.dummy is not None
                    else None
                )
                out = update_minibatch(
                    self.policy, self.stepper, batch, rows, advantages, old_logp,
                    old_from_forward=single_update, ref_logp=ref_logp, algo=cfg.algo,
                    temperature=cfg.rollout.temperature, entropy_coef=coef, budget=budget,
                    autocast=self.autocast(), weights=weights, dummy=self.dummy,
                )  # fmt: skip
                for name, value in out.items():
                    stats[name].append(value)
        t_update = time.perf_counter() - t2
        mask = batch.response_mask.bool()
        # rollout engine vs trainer on the same sampled tokens (see _logprob_gap)
        gap = (engine_logp.to(device) - old_logp).abs()[mask]
        # sums over the ranks (in one process the tensors themselves: the same float32 arithmetic)
        entropy_sum = distributed.all_reduce_sum((-old_logp * batch.response_mask).sum())
        token_sum = distributed.all_reduce_sum(batch.response_mask.sum())
        tokens = float(token_sum)
        # the controller's signal: Monte-Carlo entropy of the sampling policy on the filtered batch
        sampled_entropy = float(entropy_sum / token_sum.clamp(min=1))
        gap_mean = float(distributed.all_reduce_sum(gap.sum())) / max(tokens, 1.0)
        gap_max = distributed.all_reduce_max(float(gap.max()) if gap.numel() else 0.0)
        advantages = adv_all[keep]  # the whole step's, for the statistics
        mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
        metrics.update(
            {
                "actor/pg_loss": mean(stats["pg_loss"]),
                "actor/total_loss": mean(stats["loss"]),
                "actor/pg_clipfrac": mean(stats["clipfrac"]),
                "actor/ppo_kl": mean(stats["approx_kl"]),
                "actor/kl_loss": mean(stats["kl_loss"]),
                "actor/grad_norm": mean(stats["grad_norm"]),
                "actor/lr": cfg.optim.lr,
                "actor/micro_batches": mean(stats["micro_batches"]),
                "policy/entropy": mean(stats["entropy"]),
                "policy/sampled_entropy": sampled_entropy,
                "actor/entropy_coeff": self.controller.value,
                "actor/entropy_coeff_realized": coef,
                "advantages/mean": float(advantages.mean()),
                "advantages/abs_mean": float(advantages.abs().mean()),
                # the engine's log-probs are those of the distribution it sampled from: after top-k /
                # top-p (renormalised) when those are on; the trainer's are the full softmax at the
                # rollout temperature, so with filters on the gap includes the filter's renormalisation
                "rollout/logprob_diff_mean": gap_mean,
                "rollout/logprob_diff_max": gap_max,
                "train/tokens_per_s": tokens * cfg.algo.ppo_epochs / max(t_update, 1e-9),
                "timing_s/update": t_update,
                "timing_s/step": time.perf_counter() - t0,
            }
        )
        self._log_memory(metrics)
        if cfg.entropy.adaptive:
            self.controller = self.controller.update(sampled_entropy)
        return metrics

    def _log_memory(self, metrics: dict[str, float]) -> None:
        """``memory/peak_gb``: the step's peak of allocated CUDA memory (none on the CPU)."""
        peak = peak_memory_bytes(self.precision.device)
        if peak is not None:
            metrics["memory/peak_gb"] = peak / 2**30

    def sample_groups(self, k: int) -> int:
        """How many of the step's ``k`` groups are logged (``samples_per_step``, an older configs' knob,
        counts samples: whole groups covering them)."""
        cfg = self.cfg
        if cfg.samples_per_step is not None:
            return min(k, -(-cfg.samples_per_step // cfg.rollout.n))
        return groups_to_log(cfg.sample_groups_per_step, k)

    def _log_samples(self, step, chosen, flat, verdicts, advantages, first_group, k, statuses) -> None:
        """Whole groups: the step's first :meth:`sample_groups` groups (the prompts are a shuffled draw),
        every completion with its reward, advantage, verdict, finish reason, and its group's status as
        the filter decided (``statuses``, the whole step's); the first ``token_stats_groups_per_step`` of
        them with per-token arrays (:meth:`_token_stats`). ``chosen``, ``flat`` and ``advantages`` are this
        rank's; ``first_group`` is the step's index of its first prompt (the ranks' rows are gathered)."""
        groups = self.sample_groups(k)
        if not groups:
            return
        cfg = self.cfg
        stats_groups = min(cfg.token_stats_groups_per_step, groups)
        mine = [j for j, (gi, _) in enumerate(flat) if first_group + gi < groups]
        with_tokens = [j for j in mine if first_group + flat[j][0] < stats_groups]
        tokens = self._token_stats(flat, with_tokens) if stats_groups else {}
        rows = []
        shown: dict[int, str] = {}
        for j in mine:
            (gi, c), v = flat[j], verdicts[j]
            problem = self.train_set[chosen[gi]]
            if gi not in shown:  # what the model read: the prompt as the chat template rendered it
                shown[gi] = render_prompt_text(self.tokenizer, problem.prompt, cfg.chat_template)
            text = c.completion_text
            row = rollout_sample(
                prompt=shown[gi], completion=text, length=len(c.completion_ids), truncated=c.truncated,
                finish=c.finish_reason, verdict=v, domain=problem.domain, reference=problem.reference,
                data_source=problem.data_source, group_index=first_group + gi,
                member_index=j - gi * cfg.rollout.n, phase="train", advantage=float(advantages[j]),
                status=statuses[first_group + gi],
                extra={"detail": v.detail[:300], "problem_id": chosen[gi],
                       "reflection_words": sum(text.lower().count(w) for w in SELF_REFLECTION)},
            )  # fmt: skip
            if j in tokens:
                row["tokens"] = tokens[j]
            rows.append(row)
        self.sink.log_samples(step, distributed.gather_lists(rows))

    def _token_stats(self, flat, rows: list[int]) -> dict[int, dict]:
        """Per-token arrays of this rank's completions ``rows`` (indices into ``flat``): character
        offsets, and the trainer's log-probs and entropies at the rollout temperature from one no-gradient
        forward of the policy before the update (the sampling policy), in token-budget micro-batches; the
        engine's own log-probs when the rollout engine is not the trainer's model (vLLM). Every rank
        calls it (its passes are padded to the others' under ZeRO-3 / DDP), with rows or without."""
        cfg, tok = self.cfg, self.tokenizer
        pairs = [(flat[j][1].prompt_ids, flat[j][1].completion_ids) for j in rows]
        batch = (
            build_batch(pairs, tok.pad_token_id)
            if pairs
            else (self.dummy.select(slice(0, 0)).to("cpu") if self.dummy is not None else None)
        )
        if batch is None:
            return {}
        was_training = self.model.training
        self.model.eval()  # as the sampler ran it (no dropout: nothing drawn from the torch generator)
        try:
            logp, entropy = batch_logprobs_and_entropy(
                self.policy, batch.to(self.precision.device), temperature=cfg.rollout.temperature,
                budget=cfg.micro_batch_tokens, autocast=self.autocast(), dummy=self.dummy,
            )  # fmt: skip
        finally:
            self.model.train(was_training)
        logp, entropy = logp.cpu(), entropy.cpu()
        engine_reports = not isinstance(self.engine, TorchSampler)  # the hook: vLLM's own log-probs
        out = {}
        for r, j in enumerate(rows):
            c = flat[j][1]
            start, m = len(c.prompt_ids) - 1, len(c.completion_ids)
            out[j] = token_arrays(
                token_offsets(tok, c.completion_ids, c.completion_text),
                logprobs=logp[r, start : start + m].tolist(),
                entropies=entropy[r, start : start + m].tolist(),
                engine_logprobs=c.logprobs
                if engine_reports and len(c.logprobs) == m and all(map(math.isfinite, c.logprobs))
                else None,  # vLLM reports NaN where it returned no log-prob: none then
            )
        return out

    def evaluate(self, step: int) -> dict[str, float]:
        cfg = self.cfg
        self.sync_rollout_weights()  # on every rank (under ZeRO-3 it gathers the parameters)
        metrics = None
        if distributed.is_rank_zero():  # rank 0 evaluates; the others wait at their next collective
            # the stage's response length, as OR1 validates (not a fixed default)
            metrics, protocol = evaluate(
                self.eval_engine, self.eval_set, self.pool, k=cfg.eval.k, temperature=cfg.eval.temperature,
                top_p=cfg.eval.top_p, max_new_tokens=stage_at(cfg, step)[1], seed=cfg.seed,
                on_samples=lambda rows: self.sink.log_samples(step, rows),
                sample_problems=cfg.eval.sample_problems, samples_per_problem=cfg.eval.samples_per_problem,
                ks=cfg.eval.ks or None,
            )  # fmt: skip
            # the config field: the platform names the dataset version it held ("arith-bench v1")
            name = "eval" if cfg.eval_dataset is None else "eval_dataset"
            self.sink.log_evaluation(step, name, metrics, protocol)
        metrics = distributed.broadcast_object(metrics)
        return {f"val/{k}": v for k, v in report.scalars(metrics).items()}  # intervals stay on the evaluation


def train(cfg: RLConfig, sink: Sink) -> dict:
    t = Trainer(cfg, sink)
    try:
        if t.start == 0:
            first = {"data/prompts_over_max": float(t.prompts_over_max)}
            if cfg.data.offline_difficulty_filter:
                first.update(t.offline_difficulty_filter())
            first.update(t.evaluate(0))
            sink.log(0, first)
        last_metrics: dict[str, float] = {}
        step = t.start
        for step in range(max(1, t.start), cfg.steps + 1):
            if sink.should_stop():
                t.checkpoint(step - 1, {})
                return {"stopped": True, "step": step - 1, **sandbox_record(t.pool)}
            metrics = t.step(step)
            if (cfg.eval.every and step % cfg.eval.every == 0) or step == cfg.steps:
                metrics.update(t.evaluate(step))
            sink.log(step, metrics)
            last_metrics = metrics
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step != cfg.steps:
                t.checkpoint(step, {k: v for k, v in metrics.items() if k.startswith("val/")})
        final = {k: v for k, v in last_metrics.items() if k.startswith("val/")}
        t.checkpoint(step, final)
        return {"stopped": False, "step": step, **final, **sandbox_record(t.pool)}
    finally:
        t.pool.close()
