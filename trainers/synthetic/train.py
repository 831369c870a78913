"""Synthetic curves: a decaying loss with noise and spikes, a rising reward, an entropy that decays.

Deterministic per (seed, step), so a resumed run logs exactly what an uninterrupted one would."""

from __future__ import annotations

import json
import time

import numpy as np

from trainers.base import Sink
from trainers.synthetic.config import SyntheticConfig

BASE_KEYS = ("train/loss", "train/reward", "policy/entropy", "train/lr")


def key_names(n: int) -> list[str]:
    return list(BASE_KEYS[:n]) + [f"extra/k{i:03d}" for i in range(n - len(BASE_KEYS))]


def values_at(step: int, names: list[str], seed: int) -> dict[str, float]:
    rng = np.random.default_rng([seed, step])
    noise = rng.normal(size=len(names))
    t = step / 1000.0
    out = {}
    for i, name in enumerate(names):
        if name == "train/loss":
            v = 2.0 * np.exp(-t) + 0.05 * noise[i] + (1.5 if rng.random() < 0.001 else 0.0)
        elif name == "train/reward":
            v = 1.0 - np.exp(-t) + 0.05 * noise[i]
        elif name == "policy/entropy":
            v = 1.5 * np.exp(-0.5 * t) + 0.01 * noise[i]
        elif name == "train/lr":
            v = 1e-6
        else:
            v = np.sin(t + i) + 0.1 * noise[i]
        out[name] = float(v)
    return out


def train(config: SyntheticConfig, sink: Sink) -> dict:
    names = key_names(config.keys)
    start = 0
    if sink.resume_from is not None:
        start = json.loads((sink.resume_from / "state.json").read_text())["step"] + 1
    step = start
    for step in range(start, config.steps):
        if sink.should_stop():
            return {"stopped": True, "last_step": step - 1}
        if config.fail_at_step is not None and step == config.fail_at_step:
            raise RuntimeError(f"synthetic failure at step {step} (fail_at_step)")
        values = values_at(step, names, config.seed)
        sink.log(step, values)
        if config.samples_every and step % config.samples_every == 0:
            sink.log_samples(step, [_sample(step, i, values) for i in range(2)])
        if config.evaluate_every and step % config.evaluate_every == 0:
            sink.log_evaluation(step, "synthetic", {"avg@1": values.get("train/reward", 0.0)}, {"k": 1})
        if config.checkpoint_every and step > 0 and step % config.checkpoint_every == 0:
            _checkpoint(sink, step, values)
        if config.sleep_per_step:
            time.sleep(config.sleep_per_step)
    _checkpoint(sink, config.steps - 1, values_at(config.steps - 1, names, config.seed))
    return {"stopped": False, "last_step": config.steps - 1}


def _sample(step: int, i: int, values: dict[str, float]) -> dict:
    reward = values.get("train/reward", 0.0)
    return {"prompt": f"synthetic prompt {step}.{i}", "completion": f"answer {step}.{i}", "reward": reward}


def _checkpoint(sink: Sink, step: int, values: dict[str, float]) -> None:
    directory = sink.checkpoint_dir(step)
    (directory / "state.json").write_text(json.dumps({"step": step}))
    sink.save_checkpoint(step, directory, {"train/loss": values.get("train/loss", float("nan"))})
