"""Skywork-OR1 / MAGIC: GRPO for long chain-of-thought with verifiable rewards.

    python -m trainers.rl --config cfg.yaml

One step (seeds-spec 1.4): sample prompts, n rollouts each at temperature 1.0, score them with the
verifiers in a separate process pool (math-verify; code in the sandbox), group statistics, reject
all-0/all-1 groups, group-normalised advantages, recompute the rollout log-probs with the training
model, ``ppo_epochs x mini_batches`` updates of the token-level PPO-clip loss with the adaptive entropy
bonus (one update = on-policy, the recipe), then update the entropy controller with the sampled
entropy of the filtered batch. Departures from the original code (README has the list): the entropy
controller's state is saved in checkpoints; the loss is the exact global token mean unless
``algo.loss_agg = verl_compat``; the online filter drops prompts solved n/n in the previous stage at
each stage switch (the paper's rule; not in the repo).

Training engines: ``engine: torch`` steps a torch AdamW; ``engine: deepspeed`` wraps the same AdamW in
DeepSpeed ZeRO (``zero_stage``; one process, gloo on the CPU, NCCL on a GPU; trainers.common.deepspeed_glue)
with the clip in DeepSpeed's config, so both compute the same update. Under ZeRO-3 the parameters are
partitioned: checkpoints gather them first, and the torch sampler samples from a dense copy that each
weight sync refreshes (as vLLM's copy is refreshed). A DeepSpeed checkpoint keeps DeepSpeed's own optimizer
state under ``deepspeed/`` beside the loadable model; resume it with the same engine and stage."""

from __future__ import annotations

import json
import random
import time
from collections import defaultdict
from pathlib import Path

import torch

from trainers.base import Sink
from trainers.common import deepspeed_glue
from trainers.common.models import load_policy, seed_everything
from trainers.common.rewards import RewardPool
from trainers.common.rollout import TorchSampler
from trainers.common.tiny import is_char_tokenizer_dir
from trainers.eval.core import Problem, evaluate
from trainers.rl.batch import build_batch, logprobs_and_entropy
from trainers.rl.config import RLConfig
from trainers.rl.core import EntropyController, group_advantages, informative_groups, masked_mean, policy_loss
from trainers.sft.train import resolve_model_path, save_policy

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


def load_problems(path: str | None, generated: int, seed: int, *, eval_split: bool) -> list[Problem]:
    if path is None:
        from trainers.common import arith

        train, test = arith.disjoint_splits(
            generated if not eval_split else 1, generated if eval_split else 1, seed=seed
        )
        chosen = test if eval_split else train
        return [Problem(p.prompt, "math", str(p.answer)) for p in chosen]
    out = []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            ref = row.get("tests") if row.get("domain") == "code" else row.get("answer")
            out.append(Problem(row["prompt"], row.get("domain", "math"), ref))
    return out


def make_engine(kind: str, model, tokenizer, model_dir: Path):
    if kind in ("auto", "vllm"):
        from trainers.common import vllm_engine

        if vllm_engine.available():
            return vllm_engine.VllmEngine(model_dir, tokenizer=tokenizer)
        if kind == "vllm":
            raise RuntimeError("rollout.engine = vllm, but vllm or CUDA is not available on this worker")
    return TorchSampler(model, tokenizer, batch_size=256)


def stage_at(cfg: RLConfig, step: int) -> tuple[int, int]:
    for i, stage in enumerate(cfg.rollout.stages):
        if step < stage.until_step:
            return i, stage.max_response
    return len(cfg.rollout.stages) - 1, cfg.rollout.stages[-1].max_response


class Trainer:
    def __init__(self, cfg: RLConfig, sink: Sink):
        self.cfg, self.sink = cfg, sink
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        seed_everything(cfg.seed)
        resume = Path(sink.resume_from) if sink.resume_from is not None else None
        self.model_dir = resume or resolve_model_path(cfg.model_path, Path(sink.workdir), cfg.seed)
        self.model, self.tokenizer = load_policy(self.model_dir)
        self.char_tokenizer = is_char_tokenizer_dir(self.model_dir)
        self.ref = None
        if cfg.algo.kl_coef > 0:
            self.ref, _ = load_policy(self.model_dir)
            self.ref.eval().requires_grad_(False)
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
            if deepspeed_glue.world_size() != 1:
                raise ValueError("engine=deepspeed runs in one process for now (WORLD_SIZE must be 1)")
            if cfg.zero_stage == 3:
                rollout_model, _ = load_policy(self.model_dir)
                rollout_model.requires_grad_(False)
            self.ds = deepspeed_glue.initialize(
                self.model, self.optimizer, device=next(self.model.parameters()).device,
                micro_batch=1, grad_accum=1, zero_stage=cfg.zero_stage, grad_clip=cfg.optim.grad_clip,
            )  # fmt: skip
            self.zero_stage = cfg.zero_stage
        # the callable the losses run through (DeepSpeed's engine runs ZeRO-3's gathering hooks)
        self.policy = self.ds if self.ds is not None else self.model
        self.engine = make_engine(cfg.rollout.engine, rollout_model, self.tokenizer, self.model_dir)
        self.pool = RewardPool(cfg.reward_processes)
        self.train_set = load_problems(
            cfg.train_dataset, cfg.data.generated_train, cfg.seed, eval_split=False
        )
        self.eval_set = load_problems(cfg.eval_dataset, cfg.data.generated_eval, cfg.seed, eval_split=True)
        if cfg.eval.max_problems:
            self.eval_set = self.eval_set[: cfg.eval.max_problems]
        self.active = list(range(len(self.train_set)))
        self.solved_all: dict[int, int] = defaultdict(int)  # prompt -> times solved n/n in this stage
        self.controller = EntropyController(
            cfg.entropy.target, cfg.entropy.delta, cfg.entropy.min, cfg.entropy.max, 0.0, True
        )
        self.rng = random.Random(cfg.seed)
        self.start = 0
        self.last_checkpoint: int | None = None
        if resume is not None and (resume / "rl_state.pt").exists():
            self._load_state(resume / "rl_state.pt")

    # --- state ------------------------------------------------------------------------------------
    def _state(self, step: int) -> dict:
        return {
            "step": step,
            "engine": self.cfg.engine,
            "zero_stage": self.zero_stage,
            # DeepSpeed saves its (partitioned) optimizer state itself, under DEEPSPEED_DIR
            "optimizer": self.optimizer.state_dict() if self.ds is None else None,
            "controller": self.controller.state_dict(),
            "rng": self.rng.getstate(),
            "torch_rng": torch.get_rng_state(),
            "active": self.active,
            "solved_all": dict(self.solved_all),
        }

    def _load_state(self, path: Path) -> None:
        state = torch.load(path, weights_only=False)
        saved = (state.get("engine", "torch"), state.get("zero_stage", 0))
        if saved != (self.cfg.engine, self.zero_stage):
            raise ValueError(
                f"checkpoint {path.parent} was trained with engine={saved[0]} zero_stage={saved[1]}, "
                f"this config has engine={self.cfg.engine} zero_stage={self.zero_stage}"
            )
        if self.ds is not None:
            self.ds.load_checkpoint(str(path.parent / DEEPSPEED_DIR), tag=DEEPSPEED_TAG)
        else:
            self.optimizer.load_state_dict(state["optimizer"])
        self.controller = EntropyController.from_state(state["controller"])
        self.rng.setstate(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        self.active = state["active"]
        self.solved_all = defaultdict(int, state["solved_all"])
        self.start = state["step"] + 1

    def checkpoint(self, step: int, metrics: dict) -> None:
        if step == self.last_checkpoint:
            return  # a stop right after a periodic checkpoint: nothing new to save
        self.last_checkpoint = step
        with deepspeed_glue.full_parameters(self.model, self.zero_stage):
            directory = save_policy(self.sink, step, self.model, self.tokenizer, self.char_tokenizer)
        if self.ds is not None:
            self.ds.save_checkpoint(str(directory / DEEPSPEED_DIR), tag=DEEPSPEED_TAG)
        torch.save(self._state(step), directory / "rl_state.pt")
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

    # --- data filters -----------------------------------------------------------------------------
    def offline_difficulty_filter(self) -> dict[str, float]:
        """Estimate each prompt's pass rate with the starting policy; drop those at 0 and 1."""
        cfg = self.cfg
        problems = [self.train_set[i] for i in self.active]
        groups = self.engine.generate(
            [p.prompt for p in problems], n=cfg.data.difficulty_samples, temperature=cfg.rollout.temperature,
            max_new_tokens=cfg.rollout.stages[0].max_response, seed=cfg.seed,
        )  # fmt: skip
        items = [
            (p.domain, c.completion_text, p.reference)
            for p, g in zip(problems, groups, strict=True)
            for c in g
        ]
        verdicts = self.pool.score_batch(items)
        k = cfg.data.difficulty_samples
        keep = []
        for j, idx in enumerate(self.active):
            c = sum(v.reward >= 1 for v in verdicts[j * k : (j + 1) * k])
            if 0 < c < k:
                keep.append(idx)
        before = len(self.active)
        self.active = keep or self.active
        return {"data/offline_kept": len(keep), "data/offline_dropped": before - len(keep)}

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
        metrics: dict[str, float] = {}
        stage, max_response = stage_at(cfg, step)
        if step > 0 and stage != stage_at(cfg, step - 1)[0] and cfg.data.online_filter:
            metrics["data/online_dropped"] = self.online_filter()
        k = min(cfg.rollout.prompts_per_step, len(self.active))
        chosen = self.rng.sample(self.active, k)
        problems = [self.train_set[i] for i in chosen]

        t0 = time.perf_counter()
        self.sync_rollout_weights()
        groups = self.engine.generate(
            [p.prompt for p in problems], n=cfg.rollout.n, temperature=cfg.rollout.temperature,
            top_p=cfg.rollout.top_p, top_k=max(0, cfg.rollout.top_k), max_new_tokens=max_response,
            seed=self.rng.randrange(2**31),
        )  # fmt: skip
        t_gen = time.perf_counter() - t0

        flat = [(gi, c) for gi, g in enumerate(groups) for c in g]
        items = [(problems[gi].domain, c.completion_text, problems[gi].reference) for gi, c in flat]
        t1 = time.perf_counter()
        verdicts = self.pool.score_batch(items)
        t_reward = time.perf_counter() - t1
        rewards = torch.tensor([v.reward for v in verdicts], dtype=torch.float32)
        group_ids = torch.tensor([gi for gi, _ in flat])
        truncated = torch.tensor([c.truncated for _, c in flat])
        lengths = torch.tensor([len(c.completion_ids) for _, c in flat], dtype=torch.float32)

        # group statistics, before rejection
        n = cfg.rollout.n
        per_group = rewards.view(len(groups), n).mean(1)
        for gi, acc in enumerate(per_group.tolist()):
            if acc >= 1.0:
                self.solved_all[chosen[gi]] += 1
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
        metrics["batch/kept_group_ratio"] = float(keep.view(len(groups), n)[:, 0].float().mean())
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
        self._log_samples(step, problems, flat, verdicts, adv_all)
        if not keep.any():
            metrics["batch/skipped"] = 1.0
            return metrics

        idx = torch.nonzero(keep).squeeze(-1).tolist()
        batch = build_batch(
            [(flat[i][1].prompt_ids, flat[i][1].completion_ids) for i in idx], tok.pad_token_id
        )
        advantages = adv_all[keep]
        t2 = time.perf_counter()
        self.model.train()
        # One update on the whole batch (OR1's on-policy setting): the log-probs before the update are
        # those of that update's own forward, detached; a separate no-grad pass would recompute them.
        single_update = cfg.algo.ppo_epochs == 1 and cfg.algo.mini_batches == 1
        with torch.no_grad():
            old_logp = (
                None
                if single_update
                else logprobs_and_entropy(self.policy, batch, cfg.rollout.temperature, with_entropy=False)[0]
            )
            ref_logp = (
                logprobs_and_entropy(self.ref, batch, cfg.rollout.temperature, with_entropy=False)[0]
                if self.ref is not None
                else None
            )
        coef = self.controller.coef if cfg.entropy.adaptive else cfg.entropy.fixed_coef

        B = len(batch)
        mb = max(1, -(-B // cfg.algo.mini_batches))
        stats = defaultdict(list)
        for _ in range(cfg.algo.ppo_epochs):
            perm = torch.randperm(B) if cfg.algo.mini_batches > 1 else torch.arange(B)
            for start in range(0, B, mb):
                sel = perm[start : start + mb]
                sub = batch.select(sel)
                logp, ent = logprobs_and_entropy(
                    self.policy, sub, cfg.rollout.temperature, entropy_grad=coef != 0
                )
                if old_logp is None:
                    old_logp = logp.detach()
                out = policy_loss(
                    logp, old_logp[sel], advantages[sel], sub.response_mask,
                    clip_low=cfg.algo.clip_low, clip_high=cfg.algo.clip_high, entropy=ent, entropy_coef=coef,
                    ref_logp=ref_logp[sel] if ref_logp is not None else None, kl_coef=cfg.algo.kl_coef,
                    aggregation=cfg.algo.loss_agg, micro_batch_seqs=max(1, len(sel) // 2),
                )  # fmt: skip
                if self.ds is not None:
                    self.ds.backward(out.loss)
                    self.ds.step()  # clips (DeepSpeed config), steps, zeroes the gradients
                    grad_norm = deepspeed_glue.global_grad_norm(self.ds)
                else:
                    self.optimizer.zero_grad(set_to_none=True)
                    out.loss.backward()
                    grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip)
                    self.optimizer.step()
                for name in ("pg_loss", "entropy", "clipfrac", "approx_kl", "kl_loss"):
                    stats[name].append(float(getattr(out, name)))
                stats["loss"].append(out.loss.item())
                stats["grad_norm"].append(float(grad_norm))
        t_update = time.perf_counter() - t2
        # the controller's signal: Monte-Carlo entropy of the sampling policy on the filtered batch
        sampled_entropy = float(masked_mean(-old_logp, batch.response_mask))
        tokens = float(batch.response_mask.sum())
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
                "policy/entropy": mean(stats["entropy"]),
                "policy/sampled_entropy": sampled_entropy,
                "actor/entropy_coeff": self.controller.value,
                "actor/entropy_coeff_realized": coef,
                "advantages/mean": float(advantages.mean()),
                "advantages/abs_mean": float(advantages.abs().mean()),
                "train/tokens_per_s": tokens * cfg.algo.ppo_epochs / max(t_update, 1e-9),
                "timing_s/update": t_update,
                "timing_s/step": time.perf_counter() - t0,
            }
        )
        if cfg.entropy.adaptive:
            self.controller = self.controller.update(sampled_entropy)
        return metrics

    def _log_samples(self, step, problems, flat, verdicts, advantages) -> None:
        if not self.cfg.samples_per_step:
            return
        rows = []
        for j, ((gi, c), v) in enumerate(zip(flat, verdicts, strict=True)):
            if j >= self.cfg.samples_per_step:
                break
            text = c.completion_text
            rows.append(
                {
                    "prompt": problems[gi].prompt, "completion": text, "reward": v.reward,
                    "advantage": float(advantages[j]), "verdict": v.verdict, "length": len(c.completion_ids),
                    "truncated": c.truncated, "group": gi, "detail": v.detail[:300],
                    "reflection_words": sum(text.lower().count(w) for w in SELF_REFLECTION),
                }
            )  # fmt: skip
        self.sink.log_samples(step, rows)

    def evaluate(self, step: int) -> dict[str, float]:
        cfg = self.cfg
        self.sync_rollout_weights()
        metrics, protocol = evaluate(
            self.engine, self.eval_set, self.pool, k=cfg.eval.k, temperature=cfg.eval.temperature,
            top_p=cfg.eval.top_p, max_new_tokens=stage_at(cfg, step)[1], seed=cfg.seed,
        )  # fmt: skip
        # the config field: the platform names the dataset version it held ("arith-bench v1")
        name = "eval" if cfg.eval_dataset is None else "eval_dataset"
        self.sink.log_evaluation(step, name, metrics, protocol)
        return {f"val/{k}": v for k, v in metrics.items()}


def train(cfg: RLConfig, sink: Sink) -> dict:
    t = Trainer(cfg, sink)
    try:
        if t.start == 0:
            first = {}
            if cfg.data.offline_difficulty_filter:
                first.update(t.offline_difficulty_filter())
            first.update(t.evaluate(0))
            sink.log(0, first)
        last_metrics: dict[str, float] = {}
        step = t.start
        for step in range(max(1, t.start), cfg.steps + 1):
            if sink.should_stop():
                t.checkpoint(step - 1, {})
                return {"stopped": True, "step": step - 1}
            metrics = t.step(step)
            if (cfg.eval.every and step % cfg.eval.every == 0) or step == cfg.steps:
                metrics.update(t.evaluate(step))
            sink.log(step, metrics)
            last_metrics = metrics
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step != cfg.steps:
                t.checkpoint(step, {k: v for k, v in metrics.items() if k.startswith("val/")})
        final = {k: v for k, v in last_metrics.items() if k.startswith("val/")}
        t.checkpoint(step, final)
        return {"stopped": False, "step": step, **final}
    finally:
        t.pool.close()
