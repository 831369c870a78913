"""The training loop of the tabular trainer: ``train(config, sink) -> summary``.

Builds the MDP, computes the optimum once (the regularised one for entropy_softmax_pg,
entropy_softmax_npg and soft_pi), then for k = 0, 1, ..., iterations evaluates pi_k exactly, logs

- ``gap``: V*(rho) - V^k(rho) (regularised: V_tau*(rho) - V_tau^k(rho)),
- ``value``: V^k(rho) (regularised: V_tau^k(rho)),
- ``gap_inf``: max_s |V*(s) - V^k(s)| (regularised likewise),
- ``entropy``: the mean over states of the entropy of pi_k(s, .),
- ``dist_to_opt``: max_s of the L1 distance from pi_k(s, .) to the optimal policy: pi_tau* for the
  regularised methods; otherwise the nearest optimal policy, i.e. 2 x the mass on non-optimal actions
  (the greedy optimal policy when the optimal action is unique, and well defined under ties),
- ``step_size`` (when the config has one: soft_pi needs none), and for hadamard_pg ``suboptimal_mass`` = max_s b_s^k (b_s = 1 - mass on optimal actions),

and applies one update. Checkpoints (params.safetensors + state.json) go to ``sink.checkpoint_dir``
every ``checkpoint_every`` steps and at the end; ``sink.resume_from`` continues after one, and since
everything is deterministic a resumed run logs exactly what an uninterrupted one would.

Run it from the command line with ``python -m trainers.tabular --config cfg.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file
from threadpoolctl import threadpool_limits

from trainers.base import Sink
from trainers.tabular.config import TabularConfig
from trainers.tabular.evaluation import (
    PolicyEvaluation,
    entropy,
    optimal_action_mask,
    optimal_values,
    soft_optimal,
)
from trainers.tabular.mdp import MDP, build_mdp
from trainers.tabular.methods import PARAMETER_NAME, Hyper, evaluate_params, initial_params, update


@dataclass(frozen=True)
class Reference:
    """What the metrics compare against: the optimal values, and the optimal policy (regularised) or
    the set of optimal actions (unregularised)."""

    v: np.ndarray
    pi: np.ndarray | None = None  # pi_tau*, regularised only
    optimal_mask: np.ndarray | None = None  # [S, A] bool, unregularised only


def reference_for(mdp: MDP, config: TabularConfig) -> Reference:
    if config.regularised:
        v, _, log_pi = soft_optimal(mdp, config.tau)
        return Reference(v=v, pi=np.exp(log_pi))
    v, q = optimal_values(mdp)
    return Reference(v=v, optimal_mask=optimal_action_mask(q))


def suboptimal_mass(ev: PolicyEvaluation, ref: Reference) -> np.ndarray:
    """b_s = 1 - sum over optimal actions of pi(s, a), per state."""
    return np.maximum(1.0 - (ev.pi * ref.optimal_mask).sum(axis=1), 0.0)


def step_metrics(mdp: MDP, config: TabularConfig, ev: PolicyEvaluation, ref: Reference) -> dict[str, float]:
    value = float(mdp.rho @ ev.v)
    if ref.pi is not None:
        dist = np.abs(ev.pi - ref.pi).sum(axis=1).max()
    else:
        worst_mass = suboptimal_mass(ev, ref).max()
        dist = 2.0 * worst_mass
    metrics = {
        "gap": float(mdp.rho @ ref.v) - value,
        "value": value,
        "gap_inf": float(np.abs(ref.v - ev.v).max()),
        "entropy": float(entropy(ev.pi, ev.log_pi).mean()),
        "dist_to_opt": float(dist),
    }
    if config.step_size is not None:  # soft_pi has none (and ignores one given: it is logged as given)
        metrics["step_size"] = config.step_size
    if config.method == "hadamard_pg":
        metrics["suboptimal_mass"] = float(worst_mass)
    return metrics


def save_params(sink: Sink, step: int, config: TabularConfig, params: np.ndarray, gap: float) -> None:
    directory = Path(sink.checkpoint_dir(step))
    save_file(
        {PARAMETER_NAME[config.method]: np.ascontiguousarray(params)}, str(directory / "params.safetensors")
    )
    (directory / "state.json").write_text(json.dumps({"step": step, "method": config.method}))
    sink.save_checkpoint(step, directory, {"gap": gap})


def load_params(directory: Path, config: TabularConfig, shape: tuple[int, int]) -> tuple[int, np.ndarray]:
    """(step, params) of a checkpoint written by ``save_params`` for the same method and MDP size."""
    state = json.loads((directory / "state.json").read_text())
    if state.get("method") != config.method:
        raise ValueError(
            f"checkpoint {directory} is of method {state.get('method')!r}, not {config.method!r}"
        )
    params = load_file(str(directory / "params.safetensors"))[PARAMETER_NAME[config.method]]
    if params.shape != shape:
        raise ValueError(f"checkpoint {directory} has parameters of shape {params.shape}, expected {shape}")
    return int(state["step"]), params.astype(np.float64)


def train(config: TabularConfig, sink: Sink) -> dict[str, Any]:
    """Run ``config`` to the end or until ``sink.should_stop()``; returns
    {"final_gap": gap of the last logged step, "iterations": that step, "stopped": bool}."""
    # One BLAS thread: every iteration solves S x S systems with S <= 300, where OpenBLAS's second
    # thread costs more than it gives (100 states: 0.15 ms a solve on one thread, 0.47-0.65 ms on two
    # on a busy 2-core worker, 3-4x the whole run); what the host's other cores are for is other runs.
    with threadpool_limits(limits=1, user_api="blas"):
        return _train(config, sink)


def _train(config: TabularConfig, sink: Sink) -> dict[str, Any]:
    mdp = build_mdp(config.mdp)
    ref = reference_for(mdp, config)
    tau = config.tau if config.regularised else 0.0
    hyper = Hyper(step_size=config.step_size, tau=tau, renormalize=config.renormalize)
    shape = (mdp.n_states, mdp.n_actions)

    params = initial_params(config.method, *shape)
    start = 0
    if sink.resume_from is not None and Path(sink.resume_from).is_dir():
        saved_step, params = load_params(Path(sink.resume_from), config, shape)
        ev = evaluate_params(mdp, config.method, params, tau)
        if saved_step >= config.iterations:  # the run that wrote it had finished: nothing left to do
            gap = step_metrics(mdp, config, ev, ref)["gap"]
            return {"final_gap": gap, "iterations": saved_step, "stopped": False}
        # Step `saved_step` was logged by the run that wrote the checkpoint; take the update it would
        # have taken next, from the same parameters, so the continuation is bit-identical.
        params = update(config.method, mdp, params, ev, hyper)
        start = saved_step + 1

    stopped = False
    last_checkpoint = -1
    for k in range(start, config.iterations + 1):
        ev = evaluate_params(mdp, config.method, params, tau)
        metrics = step_metrics(mdp, config, ev, ref)
        sink.log(k, metrics)
        if config.checkpoint_every and k > 0 and k % config.checkpoint_every == 0:
            save_params(sink, k, config, params, metrics["gap"])
            last_checkpoint = k
        if k == config.iterations:
            break
        if sink.should_stop():
            stopped = True
            break
        params = update(config.method, mdp, params, ev, hyper)
    if last_checkpoint != k:
        save_params(sink, k, config, params, metrics["gap"])
    return {"final_gap": metrics["gap"], "iterations": k, "stopped": stopped}
