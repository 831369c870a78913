"""DAPO (Direct Advantage Policy Optimization, arXiv 2412.18279): step-level offline RL with an
independently trained critic (seeds-spec 2).

    python -m trainers.dapo --config cfg.yaml

One run, three stages per iteration, on one global step counter (the metric "stage" says which:
0 generate, 1 critic, 2 actor):

1. generate: solutions from pi_ref, split into steps, Monte-Carlo values of every prefix state
   (trainers.dapo.values); written as JSONL and published as a "step_values" dataset;
2. critic: the policy's backbone with a fresh value head, trained on the MC values, then frozen;
3. actor: K candidate next steps per state from pi_ref, A = V(s.a) - V(s), the squared regression of
   log(pi/pi_ref) onto A/beta (trainers.dapo.actor).

``iterations > 1`` is iterative DAPO: the next iteration's pi_ref is this iteration's actor, with new
data and a new critic. Each iteration ends with a checkpoint: the actor (a policy directory
load_policy reads, in the training dtype) with its critic in ``critic/``, ``trainer_state.json`` and,
with ``save_optimizer``, ``optimizer.pt`` after an actor stage (the actor's AdamW state and, when the
checkpoint is bf16, its fp32 master weights). A resumed run starts at the first iteration that has not
finished, from the checkpoint's actor (its master weights when saved, so a bf16 checkpoint resumes
exactly); every actor stage starts a fresh AdamW, so the saved moments are not needed to resume.

Precision and memory (issue 10): the actor holds fp32 parameters and AdamW state and computes under
autocast in ``dtype`` (bf16 on CUDA by default). pi_ref is the actor before the stage's first update,
and its only uses come before that update (sampling solutions, rollouts and candidates; the reference
log-probs), so no second copy is held: it samples and scores in the compute dtype (autocast). The
critic trains the same way, then is frozen and cast to the compute dtype. Every forward that trains
or scores runs in token-budget micro-batches (``micro_batch_tokens``); ``gradient_checkpointing``
applies to actor and critic. Every prompt is rendered with the chat template (trainers.dapo.encoding).

Several ranks (``nproc_per_node`` x ``nodes``, started by torch.distributed's launcher; the sink is a
RankZeroSink, trainers.common.distributed): every rank holds the whole pipeline state and draws the same
random choices (prompts, states, batch orders: one seed), and each works on its contiguous share of
every global batch. Generation samples and scores its share of the problems and states with globally
keyed sampling noise (trainers.dapo.values), so the samples do not depend on the world size; the
actor's candidates, verdicts, V(s) and reference log-probs are computed per share and gathered. Critic
and actor train in DDP, their losses kept the global batch's means (trainers.dapo.critic, .actor).
Rank 0 writes the step-value JSONL, evaluates, logs the critic's held-out metrics and value curves and
writes the checkpoints (every rank calls the sink's checkpoint collectives). DAPO has no DeepSpeed
engine: ZeRO does not apply. On the CPU, 2 gloo ranks give the one-process losses (tests/trainers).
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
from pathlib import Path
from typing import Any

import torch

from trainers.base import Sink
from trainers.common import distributed, vllm_engine
from trainers.common.chat import end_of_turn_ids, render_prompt_text
from trainers.common.checkpoints import (
    load_optimizer_state,
    read_trainer_state,
    save_optimizer_state,
    write_policy,
    write_trainer_state,
)
from trainers.common.engines import make_engine
from trainers.common.models import ValueModel, load_policy, resolve_model_path, seed_everything
from trainers.common.policy_step import PolicyLogprobs
from trainers.common.precision import (
    enable_gradient_checkpointing,
    peak_memory_bytes,
    pick_device,
    resolve_precision,
)
from trainers.common.rewards import RewardPool
from trainers.common.rollout import TorchSampler, eos_token_ids
from trainers.common.rollout_batch import build_batch
from trainers.common.sample_record import (
    expected_answer,
    group_status,
    groups_to_log,
    token_arrays,
    token_offsets,
)
from trainers.common.sandbox_record import sandbox_record
from trainers.common.tiny import is_char_tokenizer_dir
from trainers.dapo.actor import actor_backward, sample_candidates, step_logprobs, step_stop_ids
from trainers.dapo.config import DAPOConfig
from trainers.dapo.critic import critic_backward, encode_row, evaluate_critic, state_values
from trainers.dapo.encoding import StateEncoder
from trainers.dapo.steps import StepSplitter
from trainers.dapo.values import Timings, generate_step_data
from trainers.eval import report
from trainers.eval.core import evaluate, load_problems

GENERATE, CRITIC, ACTOR = 0.0, 1.0, 2.0
LEGACY_STATE_FILE = "dapo_state.json"  # the trainer state of checkpoints written before issue 10


class Stopped(Exception):
    """The platform asked the run to stop (polled between steps)."""


class Pipeline:
    def __init__(self, cfg: DAPOConfig, sink: Sink):
        self.cfg, self.sink = cfg, sink
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        seed_everything(cfg.seed)
        distributed.init()  # no-op in one process, or when the launcher's entry point joined already
        self.precision = resolve_precision(cfg.dtype, "torch", pick_device())
        self.device = self.precision.device
        resume = Path(sink.resume_from) if sink.resume_from is not None else None
        self.first_iteration, self.step = 0, 0
        state = _read_state(resume) if resume is not None else None
        if state is not None:
            self.first_iteration = state["iteration"] + (1 if state["complete"] else 0)
            self.step = state["step"] + 1
        if resume is None and distributed.is_rank_zero():  # "tiny" is built once, by rank 0, read by all
            resolve_model_path(cfg.model_path, Path(sink.workdir), cfg.seed)
        distributed.barrier()
        self.model_dir = resume or resolve_model_path(cfg.model_path, Path(sink.workdir), cfg.seed)
        # the actor, fp32 master weights on the device; also pi_ref until its first update
        self.policy, self.tokenizer = load_policy(
            self.model_dir, dtype=self.precision.param_dtype, device=self.device
        )
        if resume is not None:  # a bf16 checkpoint's fp32 master weights, when it kept them
            load_optimizer_state(resume, None, master=self.policy)
        if cfg.gradient_checkpointing:
            enable_gradient_checkpointing(self.policy)
        # what the actor's loss runs through: the policy's log-probs module, in DDP across several ranks
        # (gradients averaged in backward; actor_backward scales the loss for that)
        self.actor_forward: torch.nn.Module = PolicyLogprobs(self.policy)
        if distributed.world_size() > 1:
            self.actor_forward = self._ddp(self.actor_forward)
        self.char_tokenizer = is_char_tokenizer_dir(self.model_dir)
        self.pad_id = self.tokenizer.pad_token_id
        self.encoder = StateEncoder(self.tokenizer, cfg.chat_template)
        # where a turn ends: EOS, and the template's end-of-turn token (<|im_end|>) when prompts are chat
        self.eos_ids = eos_token_ids(self.policy, self.tokenizer)
        if cfg.chat_template != "none":
            self.eos_ids |= end_of_turn_ids(self.tokenizer)
        self.splitter = StepSplitter(
            cfg.steps.mode, cfg.steps.delimiter, cfg.steps.marker, cfg.steps.max_steps
        )
        self.train_set = load_problems(cfg.train_dataset, cfg.generated_train, cfg.seed, eval_split=False)
        self.eval_set = load_problems(cfg.eval_dataset, cfg.generated_eval, cfg.seed, eval_split=True)
        if cfg.eval.max_problems:
            self.eval_set = self.eval_set[: cfg.eval.max_problems]
        self.engine = make_engine(
            cfg.generate.engine, self.policy, self.tokenizer, self.model_dir,
            compute_dtype=self.precision.compute_dtype, max_model_len=self._vllm_model_len(),
            gpu_memory_utilization=cfg.generate.gpu_memory_utilization,
            sync_bucket_mb=cfg.generate.vllm_sync_bucket_mb,
        )  # fmt: skip
        # Candidate steps stop at the delimiter token when the engine is ours and the delimiter is one
        # token; otherwise they are cut from a longer sample.
        if isinstance(self.engine, TorchSampler):
            self.engine = self._sampler(self.eos_ids)
            self.step_engine = self._sampler(self.eos_ids | step_stop_ids(self.tokenizer, self.splitter))
        else:
            self.step_engine = self.engine
        self.pool = RewardPool(cfg.reward_processes)
        self.rng = random.Random(cfg.seed)
        self.critic: ValueModel | None = None
        self.optimizer: torch.optim.Optimizer | None = None  # the actor's, for the checkpoint
        self.timings: dict[str, float] = {}
        self.last_val: dict[str, float] = {}
        self.last_checkpoint: int | None = None

    def _ddp(self, module: torch.nn.Module) -> torch.nn.Module:
        return torch.nn.parallel.DistributedDataParallel(
            module, device_ids=[torch.cuda.current_device()] if self.device.type == "cuda" else None,
            broadcast_buffers=False,  # constant buffers (rotary tables): a forward does no collective
        )  # fmt: skip

    def _vllm_model_len(self) -> int | None:
        """vLLM's context for this run; None where vLLM will not run (the model's own context then)."""
        if self.cfg.generate.engine == "torch" or not vllm_engine.available():
            return None
        prompts = [len(self.encoder.prompt(p.prompt)) for p in [*self.train_set, *self.eval_set]]
        return vllm_context(self.cfg, max(prompts))

    def _sampler(self, stops: set[int]) -> TorchSampler:
        """The KV-cache sampler on the actor, in the compute dtype (autocast over the fp32 weights)."""
        return TorchSampler(
            self.policy, self.tokenizer, batch_size=256, stop_token_ids=stops,
            compute_dtype=self.precision.compute_dtype,
        )  # fmt: skip

    # --- plumbing ---------------------------------------------------------------------------------
    def log(self, stage: float, metrics: dict[str, float]) -> None:
        self.sink.log(self.step, {**metrics, "stage": stage})

    def advance(self) -> None:
        """Move to the next global step, stopping cooperatively if the platform asks."""
        if self.sink.should_stop():
            raise Stopped
        self.step += 1

    def add_time(self, key: str, seconds: float) -> None:
        self.timings[key] = self.timings.get(key, 0.0) + seconds

    def memory(self) -> dict[str, float]:
        """``memory/peak_gb`` on CUDA (torch.cuda.max_memory_allocated); nothing on the CPU."""
        peak = peak_memory_bytes(self.device)
        return {} if peak is None else {"memory/peak_gb": peak / 2**30}

    def checkpoint(self, iteration: int, complete: bool) -> None:
        if self.step == self.last_checkpoint:
            return  # a stop right after an iteration's checkpoint: nothing new to save
        self.last_checkpoint = self.step
        save_dtype = self.precision.save_dtype
        # every rank agrees on the folder (a collective); rank 0 writes it (DDP keeps the ranks' actors,
        # critics and optimizer states equal); the checkpoint is recorded once, when it is complete
        directory = Path(self.sink.checkpoint_dir(self.step))
        if distributed.is_rank_zero():
            write_policy(directory, self.policy, self.tokenizer, self.char_tokenizer, dtype=save_dtype)
            if self.critic is not None:
                self.critic.save_pretrained(directory / "critic")
                self.tokenizer.save_pretrained(directory / "critic")
            if self.cfg.save_optimizer and self.optimizer is not None:
                master = self.policy if save_dtype != self.precision.param_dtype else None
                save_optimizer_state(directory, self.optimizer, master=master)
            write_trainer_state(
                directory, {"kind": "dapo", "iteration": iteration, "complete": complete, "step": self.step}
            )
            (directory / "orlab.json").write_text(json.dumps({"kind": "dapo", "step": self.step}))
        self.sink.save_checkpoint(self.step, directory, dict(self.last_val))
        if complete:
            # the next actor stage starts a fresh AdamW: its 8 bytes per parameter are not kept through
            # the next iteration's generation and critic training
            self.optimizer = None

    def evaluate(self) -> dict[str, float]:
        cfg = self.cfg.eval
        self.policy.eval()
        self.engine.sync_weights(self.policy)
        metrics = None
        if distributed.is_rank_zero():  # rank 0 evaluates; the others wait at the broadcast
            metrics, protocol = evaluate(
                self.engine, self.eval_set, self.pool, k=cfg.k, temperature=cfg.temperature, top_p=cfg.top_p,
                max_new_tokens=cfg.max_new_tokens, seed=self.cfg.seed, chat_template=self.cfg.chat_template,
                tokenizer=self.tokenizer, on_samples=lambda rows: self.sink.log_samples(self.step, rows),
                sample_problems=cfg.sample_problems, samples_per_problem=cfg.samples_per_problem,
                ks=cfg.ks or None,
            )  # fmt: skip
            # the config field: the platform names the dataset version it held ("arith-bench v1")
            name = "eval" if self.cfg.eval_dataset is None else "eval_dataset"
            self.sink.log_evaluation(self.step, name, metrics, protocol)
        metrics = distributed.broadcast_object(metrics)
        # accuracy = the mean over all k samples (avg@k): pass@1 with less variance; with k = 1 at
        # temperature 0 it is the greedy accuracy
        accuracy = metrics[f"avg@{cfg.k}"]
        self.last_val = {
            "val/accuracy": accuracy,
            **{f"val/{k}": v for k, v in report.scalars(metrics).items()},
        }
        return self.last_val

    # --- stage 1: step values -----------------------------------------------------------------------
    def generate(self, iteration: int) -> list[dict[str, Any]]:
        cfg = self.cfg.generate
        ids = list(range(len(self.train_set)))
        if cfg.prompts and cfg.prompts < len(ids):
            ids = sorted(self.rng.sample(ids, cfg.prompts))
        self.policy.eval()
        self.engine.sync_weights(self.policy)
        timings = Timings()
        rows = generate_step_data(
            self.engine, self.pool, [self.train_set[i] for i in ids], self.splitter,
            solutions_per_prompt=cfg.solutions_per_prompt, mc_rollouts=cfg.mc_rollouts,
            temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
            seed=self.rng.randrange(2**31), problem_ids=ids, timings=timings,
            context=lambda problem, steps: self.encoder.state(problem.prompt, steps),
        )  # fmt: skip
        if distributed.world_size() > 1:  # all ranks' counts; the slowest rank's time
            counts = distributed.all_reduce_sums({"rollouts": timings.rollouts, "tokens": timings.tokens})
            timings.rollouts, timings.tokens = int(counts["rollouts"]), int(counts["tokens"])
            timings.generation_s = distributed.all_reduce_max(timings.generation_s)
            timings.verification_s = distributed.all_reduce_max(timings.verification_s)
        self.add_time("generation_s", timings.generation_s)
        self.add_time("verification_s", timings.verification_s)
        self.timings["rollouts"] = self.timings.get("rollouts", 0) + timings.rollouts
        path = Path(self.sink.workdir) / f"step-values-iter{iteration}.jsonl"
        if distributed.is_rank_zero():  # every rank holds all the rows; one writes them
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "w") as f:
                for row in rows:
                    f.write(json.dumps(row) + "\n")
        protocol = {
            "policy": str(self.model_dir)
            if iteration == 0
            else f"dapo actor after iteration {iteration - 1}",
            "iteration": iteration,
            "split": self.splitter.mode,
            "delimiter": self.splitter.delimiter if self.splitter.mode == "delimiter" else None,
            "marker": self.splitter.marker if self.splitter.mode == "marker" else None,
            "max_steps": self.splitter.max_steps,
            "solutions_per_prompt": cfg.solutions_per_prompt,
            "mc_rollouts": cfg.mc_rollouts,
            "temperature": cfg.temperature,
            "top_p": cfg.top_p,
            "max_new_tokens": cfg.max_new_tokens,
            "prompts": len(ids),
            "chat_template": self.cfg.chat_template
            if self.cfg.chat_template in ("auto", "none")
            else "custom",
            "values": "v(s_t) = fraction of mc_rollouts completions of prompt + steps[:t] judged correct; "
            "the last value is the solution's own reward",
        }
        self.sink.publish_dataset(
            "step_values", f"{self.cfg.dataset_name}-step-values-iter{iteration}", path, protocol
        )
        prefix_values = [v for r in rows for v in r["values"][:-1]]
        gen_s = max(timings.generation_s, 1e-9)
        self.log(
            GENERATE,
            {
                "data/solutions": len(rows),
                "data/accuracy": sum(r["correct"] for r in rows) / max(1, len(rows)),
                "data/steps_mean": sum(len(r["steps"]) for r in rows) / max(1, len(rows)),
                "data/prefix_states": len(
                    {(r["problem_id"], "".join(r["steps"][:t])) for r in rows for t in range(len(r["steps"]))}
                ),
                "data/value_mean": sum(prefix_values) / max(1, len(prefix_values)),
                "data/iteration": iteration,
                "gen/rollouts": timings.rollouts,
                "gen/rollouts_per_s": timings.rollouts / gen_s,
                "gen/tokens_per_s": timings.tokens / gen_s,
                "timing_s/generation": timings.generation_s,
                "timing_s/verification": timings.verification_s,
                **self.memory(),
            },
        )
        return rows

    # --- stage 2: critic -----------------------------------------------------------------------------
    def train_critic(self, rows: list[dict[str, Any]]) -> None:
        cfg, budget = self.cfg.critic, self.cfg.micro_batch_tokens
        t0 = time.perf_counter()
        problems = sorted({r["problem_id"] for r in rows})
        self.rng.shuffle(problems)
        n_val = max(1, round(cfg.val_fraction * len(problems))) if len(problems) > 1 else 0
        val_ids = set(problems[:n_val])
        encoded = [encode_row(self.encoder, r, cfg.max_length) for r in rows]
        train = [s for s, r in zip(encoded, rows, strict=True) if r["problem_id"] not in val_ids]
        val = [s for s, r in zip(encoded, rows, strict=True) if r["problem_id"] in val_ids] or train
        self.critic = None  # the previous iteration's: freed before the new one is built
        # pi_ref's backbone (the actor's fp32 weights, on the device) with a fresh value head
        self.critic = ValueModel(copy.deepcopy(self.policy.base_model))
        if self.cfg.gradient_checkpointing:
            enable_gradient_checkpointing(self.critic)
        self.critic.train()
        optimizer = torch.optim.AdamW(self.critic.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        # several ranks: DDP averages the gradients (critic_backward scales the loss for that)
        forward = self._ddp(self.critic) if distributed.world_size() > 1 else self.critic

        def held_out(final: bool) -> dict[str, float]:
            if not distributed.is_rank_zero():
                return {}  # rank 0 measures and logs the held-out calibration; the others' logs are dropped
            metrics, table = evaluate_critic(
                self.critic, val, self.pad_id, loss=cfg.loss, bins=cfg.calibration_bins, token_budget=budget,
                autocast=self.precision.autocast,
            )  # fmt: skip
            out = {f"critic/{k}": v for k, v in metrics.items()}
            if final:  # the reliability diagram: an evaluation (the run page draws its bins), not metrics
                self.sink.log_evaluation(
                    self.step, "critic-calibration",
                    {**metrics, **{f"bin_{b:02d}_{name}": x for b, row in enumerate(table)
                                   for name, x in zip(("pred", "true", "count"), row, strict=True)}},
                    {"bins": cfg.calibration_bins, "labels": "monte-carlo step values", "auc_target": "final verdict",
                     "held_out_solutions": len(val), "held_out_prefixes": sum(len(s.ends) for s in val)},
                )  # fmt: skip
            return out

        self.log(CRITIC, held_out(final=False))
        per_epoch = math.ceil(len(train) / cfg.batch_size)
        total = cfg.epochs * per_epoch
        done = 0
        for _ in range(cfg.epochs):
            order = list(range(len(train)))
            self.rng.shuffle(order)
            for start in range(0, len(order), cfg.batch_size):
                batch = [train[i] for i in order[start : start + cfg.batch_size]]
                optimizer.zero_grad(set_to_none=True)
                loss = critic_backward(  # the global batch: each rank trains on its share
                    self.critic, batch, self.pad_id, loss=cfg.loss, token_budget=budget,
                    autocast=self.precision.autocast, forward=forward,
                )  # fmt: skip
                grad_norm = torch.nn.utils.clip_grad_norm_(self.critic.parameters(), 1.0)
                optimizer.step()
                done += 1
                self.advance()
                metrics = {"critic/loss": loss, "critic/grad_norm": float(grad_norm), **self.memory()}
                if done == total or (cfg.eval_every and done % cfg.eval_every == 0):
                    metrics |= held_out(final=done == total)
                self.log(CRITIC, metrics)
        del optimizer, forward
        # frozen: the backbone in the compute dtype (the value head stays fp32, see ValueModel)
        self.critic.eval().requires_grad_(False)
        self.critic.backbone.to(self.precision.compute_dtype)
        self._log_value_curves(rows, val_ids)
        self.add_time("critic_s", time.perf_counter() - t0)

    def _log_value_curves(self, rows: list[dict[str, Any]], val_ids: set[int]) -> None:
        """Per-step value curves (MC and critic) of a few held-out solutions, right and wrong ones
        (rank 0's: what it logs)."""
        if not distributed.is_rank_zero():
            return
        held = [r for r in rows if r["problem_id"] in val_ids]
        n = self.cfg.critic.curves
        right = [r for r in held if r["correct"]][: n // 2]
        picked = right + [r for r in held if not r["correct"]][: n - len(right)]
        samples = []
        for r in picked:
            states = [self.encoder.state(r["prompt"], r["steps"][:t]) for t in range(len(r["steps"]))]
            critic_values = self.values(states).tolist()
            problem = self.train_set[r["problem_id"]]
            samples.append(
                {
                    # the prompt as the policy read it, with what it is graded against (as the
                    # candidates are logged): one prompt in the matrix, not a raw and a templated one
                    "prompt": render_prompt_text(self.tokenizer, problem.prompt, self.cfg.chat_template),
                    "expected_answer": expected_answer(problem.reference, problem.domain),
                    "data_source": problem.data_source,
                    "completion": r["solution"],
                    "steps": r["steps"],
                    "values_mc": r["values"],
                    "values_critic": critic_values + [r["values"][-1]],
                    "verdict": r["verdict"],
                    "reward": r["values"][-1],
                }  # fmt: skip
            )
        if samples:
            self.sink.log_samples(self.step, samples)

    # --- stage 3: actor -------------------------------------------------------------------------------
    def values(self, states: list[list[int]]) -> torch.Tensor:
        """The frozen critic's V(s) of token-id states."""
        assert self.critic is not None
        return state_values(self.critic, states, self.pad_id, token_budget=self.cfg.micro_batch_tokens)

    def train_actor(self, rows: list[dict[str, Any]]) -> None:
        cfg, budget = self.cfg.actor, self.cfg.micro_batch_tokens
        t0 = time.perf_counter()
        by_id = {r["problem_id"]: self.train_set[r["problem_id"]] for r in rows}
        states = list(
            dict.fromkeys(
                (r["problem_id"], tuple(r["steps"][:t])) for r in rows for t in range(len(r["steps"]))
            )
        )
        if cfg.states and cfg.states < len(states):
            states = self.rng.sample(states, cfg.states)
        contexts = [self.encoder.state(by_id[p].prompt, steps) for p, steps in states]
        self.policy.eval()
        self.step_engine.sync_weights(self.policy)
        # each rank samples and scores its share of the states (all of them in one process); noise keyed
        # by the state's global position, results gathered in rank order: the one-process values
        mine = range(*distributed.shard_bounds(len(states)))
        own = sample_candidates(
            self.step_engine, [contexts[si] for si in mine], k=cfg.candidates, temperature=cfg.temperature,
            max_step_tokens=cfg.max_step_tokens, seed=self.rng.randrange(2**31), tokenizer=self.tokenizer,
            splitter=self.splitter, eos_ids=self.eos_ids, prompt_keys=mine,
        )  # fmt: skip
        t_gen = time.perf_counter() - t0
        flat = [(si, c) for si, group in zip(mine, own, strict=True) for c in group]
        t1 = time.perf_counter()
        # Q(s, a): the verifier's reward when a ends the solution, else the critic's V(s.a) (a step cut
        # at max_step_tokens is never terminal: see to_candidate)
        terminal = [(si, c) for si, c in flat if c.terminal]
        verdicts = self.pool.score_batch(
            [
                (by_id[states[si][0]].domain, "".join(states[si][1]) + c.text, by_id[states[si][0]].reference)
                for si, c in terminal
            ]
        )
        t_verify = time.perf_counter() - t1
        judged = iter(verdicts)  # this rank's candidates' (verdict, answer) when final, for the samples
        outcomes = []
        for _, c in flat:
            v = next(judged) if c.terminal else None
            outcomes.append((v.verdict, v.answer or "") if v is not None else None)
        rewards = iter(v.reward for v in verdicts)
        v_state = self.values([contexts[si] for si in mine])
        v_next = iter(self.values([contexts[si] + c.ids for si, c in flat if not c.terminal]).tolist())
        q = torch.tensor([next(rewards) if c.terminal else next(v_next) for _, c in flat])
        # pi_ref's log-probs: the actor before its first update, in the compute dtype
        ref_logp = step_logprobs(
            self.policy, [contexts[si] for si, _ in flat], [c.ids for _, c in flat], self.pad_id,
            token_budget=budget, autocast=self.precision.autocast,
        )  # fmt: skip
        candidates = distributed.gather_lists(own)
        outcomes = distributed.gather_lists(outcomes)
        q, v_state, ref_logp = _gathered(q), _gathered(v_state), _gathered(ref_logp)
        n_terminal = sum(c.terminal for group in candidates for c in group)
        K = cfg.candidates
        adv = (q.view(len(states), K) - v_state[:, None]).to(self.device)
        ref_logp = ref_logp.view(len(states), K)
        if distributed.is_rank_zero():
            self._log_candidates(states, by_id, candidates, adv, q, v_state, outcomes, contexts)
        t_prepare = time.perf_counter() - t0
        self.add_time("actor_candidates_s", t_gen)
        self.add_time("verification_s", t_verify)
        self.log(
            ACTOR,
            {"actor/states": len(states), "actor/terminal_share": n_terminal / max(1, len(q)),
             "actor/adv_std": float(adv.std()), "actor/value_state_mean": float(v_state.mean()),
             "timing_s/actor_candidates": t_gen, "timing_s/actor_prepare": t_prepare, **self.memory()},
        )  # fmt: skip

        t2 = time.perf_counter()
        self.optimizer = optimizer = torch.optim.AdamW(
            self.policy.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay
        )
        self.policy.train()
        per_epoch = math.ceil(len(states) / cfg.states_per_batch)
        total, done = cfg.epochs * per_epoch, 0
        for _ in range(cfg.epochs):
            order = list(range(len(states)))
            self.rng.shuffle(order)
            for start in range(0, len(order), cfg.states_per_batch):
                sel = order[start : start + cfg.states_per_batch]
                optimizer.zero_grad(set_to_none=True)
                out, entropy = actor_backward(  # the global batch: each rank trains on its share
                    self.policy, [contexts[si] for si in sel], [[c.ids for c in candidates[si]] for si in sel],
                    ref_logp[sel], adv[sel], self.pad_id, beta=cfg.beta, center=cfg.center, token_budget=budget,
                    autocast=self.precision.autocast, forward=self.actor_forward,
                )  # fmt: skip
                grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.grad_clip)
                optimizer.step()
                done += 1
                self.advance()
                metrics = {
                    "actor/loss": float(out.loss), "actor/adv_mean": out.adv_mean,
                    "actor/abs_log_ratio": out.abs_log_ratio, "actor/corr_log_ratio_adv": out.corr_log_ratio_adv,
                    "policy/entropy": entropy, "actor/grad_norm": float(grad_norm), **self.memory(),
                }  # fmt: skip
                if done == total or (self.cfg.eval.every and done % self.cfg.eval.every == 0):
                    t_eval = time.perf_counter()
                    metrics |= self.evaluate()
                    self.policy.train()
                    t2 += time.perf_counter() - t_eval  # evaluation is not actor training time
                self.log(ACTOR, metrics)
        self.policy.eval()
        self.policy.zero_grad(set_to_none=True)  # no gradient memory held through the next stages
        self.add_time("actor_train_s", time.perf_counter() - t2)

    def _candidate_tokens(self, context: list[int], group: list, prefix: int) -> list[dict]:
        """Per-token arrays of one state's candidates: character offsets in the logged completion (the
        state's text, ``prefix`` characters, then the candidate), and pi_ref's log-probs (temperature 1,
        as the loss reads them) and entropies from one no-gradient forward of the K rows (rank 0's actor,
        not yet updated; DAPO runs no ZeRO, so one rank's forward needs no other)."""
        batch = build_batch([(list(context), list(c.ids)) for c in group], self.pad_id).to(self.device)
        with torch.no_grad(), self.precision.autocast():
            logp, entropy = PolicyLogprobs(self.policy)(
                batch.input_ids,
                batch.attention_mask,
                batch.response_mask,
                temperature=1.0,
                entropy_grad=False,
            )
        logp, entropy = logp.float().cpu(), entropy.float().cpu()
        start = len(context) - 1
        out = []
        for r, c in enumerate(group):
            m = len(c.ids)
            offsets = [prefix + o for o in token_offsets(self.tokenizer, c.ids, c.text)]
            out.append(
                token_arrays(
                    offsets, logp[r, start : start + m].tolist(), entropy[r, start : start + m].tolist()
                )
            )
        return out

    def _log_candidates(self, states, by_id, candidates, adv, q, v_state, outcomes, contexts) -> None:
        """The first ``sample_groups`` states' candidate steps as sample groups: one group per state
        (group_index = the state's index in this actor stage, member_index = the candidate's), each
        candidate's completion the state's steps followed by it, ``reward`` = Q(s, a) (the verifier's
        reward for a final step, else the critic's V(s.a)), ``advantage`` = Q - V(s), the verifier's
        verdict on a final step. ``group_status``: with ``center`` a state whose candidates all have the
        same Q adds nothing to the loss (its centred targets are 0), so it reads solved_all /
        unsolved_all / zero_variance; every other state is "kept" (DAPO filters no state)."""
        cfg = self.cfg
        count = cfg.samples if cfg.samples is not None else groups_to_log(cfg.sample_groups, len(states))
        samples = []
        K = cfg.actor.candidates
        for si, (pid, steps) in enumerate(states[: min(count, len(states))]):
            problem = by_id[pid]
            qs = [float(q[si * K + i]) for i in range(K)]
            flat_q = all(abs(x - qs[0]) <= 1e-9 for x in qs)
            status = group_status(qs, kept=not (cfg.actor.center and flat_q))
            prompt = render_prompt_text(self.tokenizer, problem.prompt, cfg.chat_template)
            state = "".join(steps)
            tokens = (
                self._candidate_tokens(contexts[si], candidates[si], len(state))
                if si < cfg.token_stats_groups
                else None
            )
            for i, c in enumerate(candidates[si]):
                outcome = outcomes[si * K + i]
                row = {
                    "prompt": prompt, "completion": state + c.text, "reward": qs[i],
                    "rewards": {f"{problem.domain}_verifier" if c.terminal else "critic_value": qs[i]},
                    "advantage": float(adv[si, i]), "length": len(c.ids),
                    "truncated": c.finish_reason == "length", "finish_reason": c.finish_reason,
                    "group_index": si, "member_index": i, "phase": "train", "group_status": status,
                    "expected_answer": expected_answer(problem.reference, problem.domain),
                    "data_source": problem.data_source,
                    # extra: the state, the candidate, and the values the advantage came from
                    "state": state, "step_text": c.text, "terminal": c.terminal, "problem_id": pid,
                    "value_state": float(v_state[si]), "value_next": qs[i], "state_steps": len(steps),
                }  # fmt: skip
                if outcome is not None:
                    row["verdict"], row["extracted_answer"] = outcome[0], str(outcome[1])[:500]
                if tokens is not None:
                    row["tokens"] = tokens[i]
                samples.append(row)
        if samples:
            self.sink.log_samples(self.step, samples)


def _gathered(values: torch.Tensor) -> torch.Tensor:
    """Every rank's 1-d ``values`` concatenated in rank order, on this rank's device (itself in one
    process): per-share results as the global batch's."""
    if distributed.world_size() == 1:
        return values
    return torch.tensor(distributed.gather_lists(values.tolist()), dtype=values.dtype, device=values.device)


def vllm_context(cfg: DAPOConfig, longest_prompt: int) -> int:
    """The longest sequence DAPO asks an engine for: the longest rendered prompt, then a prefix of up to a
    whole solution (re-encoded step by step, which may split a step boundary into one more token per
    step) and its continuation (an MC rollout or a candidate step), or an evaluation answer. vLLM's
    ``max_model_len``; has never run on a GPU with vLLM (no GPU host available to the project has it)."""
    solution = cfg.generate.max_new_tokens
    prefix = solution + (cfg.steps.max_steps or solution)
    return vllm_engine.max_model_len(
        longest_prompt, [prefix + solution, prefix + cfg.actor.max_step_tokens, cfg.eval.max_new_tokens]
    )


def _read_state(checkpoint: Path) -> dict[str, Any] | None:
    """The DAPO state of a checkpoint: trainer_state.json, or an older checkpoint's dapo_state.json."""
    state = read_trainer_state(checkpoint)
    if state is None and (checkpoint / LEGACY_STATE_FILE).is_file():
        state = json.loads((checkpoint / LEGACY_STATE_FILE).read_text())
    return state


def train(cfg: DAPOConfig, sink: Sink) -> dict:
    p = Pipeline(cfg, sink)
    iteration = p.first_iteration
    try:
        for iteration in range(p.first_iteration, cfg.iterations):
            if iteration > p.first_iteration:
                p.advance()
            rows = p.generate(iteration)
            if iteration == p.first_iteration:
                p.log(GENERATE, p.evaluate())  # the starting policy's held-out accuracy
            p.advance()
            p.train_critic(rows)
            p.advance()
            p.train_actor(rows)
            p.checkpoint(iteration, complete=True)
    except Stopped:
        p.checkpoint(iteration, complete=False)
        return {"stopped": True, "step": p.step, "iteration": iteration, **sandbox_record(p.pool)}
    finally:
        p.pool.close()
    return {"stopped": False, "step": p.step, **p.last_val, "timings": p.timings, **sandbox_record(p.pool)}
