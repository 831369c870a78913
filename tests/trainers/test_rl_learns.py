"""RL raises held-out accuracy: the issue's demo claim, as a test.

The SFT warm start learns from "distilled" traces of which half end with a slip (every step right,
the boxed answer one too high), as unverified distillation data does; the SFT policy copies the habit.
RL with the math verifier's 0/1 reward then removes it on problems it never saw: held-out avg@4
(temperature 0.6, the paper's protocol) rises by at least MIN_GAIN. Measured on this 2-core box
(2026-11-25), 16 prompts x 8 samples, lr 5e-5: avg@4 0.34 -> 0.44 (step 10) -> 0.49 (20) -> 0.55 (40),
monotone; this test stops at step 20 and asks for a third of that gain."""

import pytest

from trainers.base import MemorySink, get_spec

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow, pytest.mark.timeout(900)]

MIN_GAIN = 0.05  # absolute avg@4 on 150 held-out problems x 4 samples


def test_rl_raises_held_out_accuracy_of_a_warm_started_policy(slipped_warm_start, tmp_path):
    policy, problems, held_out = (
        slipped_warm_start.policy,
        slipped_warm_start.train,
        slipped_warm_start.held_out,
    )
    rl = get_spec("rl")
    cfg = rl.validate(
        {
            **rl.presets["tiny-cpu-demo"],
            "model_path": str(policy),
            "train_dataset": str(problems),
            "eval_dataset": str(held_out),
            "chat_template": slipped_warm_start.chat_template,
            "steps": 20,
            "rollout": {"n": 8, "prompts_per_step": 16, "temperature": 1.0,
                        "stages": [{"until_step": 10**9, "max_response": 40}]},
            "eval": {"every": 0, "k": 4, "temperature": 0.6, "max_problems": 150},
            # on-policy with the paper's entropy control, whatever the demo preset says
            "algo": {"mini_batches": 1, "ppo_epochs": 1},
            "entropy": {"adaptive": True, "target": 0.2, "delta": 1e-4, "max": 5e-3},
            "checkpoint_every": 0,
            "samples_per_step": 0,
        }
    )  # fmt: skip
    sink = MemorySink(workdir=tmp_path / "rl")
    (tmp_path / "rl").mkdir()
    rl.train_fn()(cfg, sink)

    (s0, _, before, protocol), (s1, _, after, _) = sink.evaluations
    assert (s0, s1) == (0, 20) and protocol["k"] == 4 and protocol["temperature"] == 0.6
    gain = after["avg@4"] - before["avg@4"]
    print(f"held-out avg@4 {before['avg@4']:.3f} -> {after['avg@4']:.3f}, pass@1 {before['pass@1']:.3f} -> "
          f"{after['pass@1']:.3f}")  # fmt: skip
    assert gain >= MIN_GAIN, (before, after)
    assert after["pass@1"] > before["pass@1"]
    # the training reward moved too (first vs last ten steps)
    acc = sink.series("reward/accuracy")
    assert sum(acc[-10:]) > sum(acc[:10]), acc
