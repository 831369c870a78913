from trainers.base import TrainerSpec, register

# The CPU demo. 16 updates per rollout batch (4 mini-batches x 4 epochs, off-policy) make the entropy
# move within 40 steps, and the controller's step and cap are scaled up so it can act that fast: the
# AEC run holds entropy near the target while the run without it drifts down (README, "What the CPU
# demo shows").
_TINY = {
    "model_path": "tiny",
    "steps": 40,
    "rollout": {
        "n": 8,
        "prompts_per_step": 16,
        "temperature": 1.0,
        "stages": [{"until_step": 1000000000, "max_response": 40}],
    },
    "algo": {"mini_batches": 4, "ppo_epochs": 4},
    "entropy": {"adaptive": True, "target": 0.2, "delta": 5e-3, "max": 0.1},
    "optim": {"lr": 5e-5, "weight_decay": 0.0},
    "eval": {"every": 10, "k": 4, "temperature": 0.6, "max_problems": 100},
    "checkpoint_every": 20,
    "reward_processes": 1,
}

SPEC = register(
    TrainerSpec(
        kind="rl",
        title="RL for reasoning (Skywork-OR1 / MAGIC)",
        description="GRPO with verifiable rewards: n samples per prompt, group-normalised advantages, "
        "token-level PPO-clip, rejection of zero-advantage groups, adaptive entropy control, multi-stage "
        "context length.",
        config="trainers.rl.config:RLConfig",
        entry="trainers.rl.train:train",
        queue="gpu",
        primary_metrics=("reward/accuracy", "policy/entropy", "val/pass@1"),
        dataset_fields=("train_dataset", "eval_dataset"),
        presets={
            "tiny-cpu-demo": _TINY,
            "tiny-cpu-demo-no-aec": {**_TINY, "entropy": {"adaptive": False, "fixed_coef": 0.0}},
            "or1-7b-stage1-8k": {
                "model_path": "/models/DeepSeek-R1-Distill-Qwen-7B",
                "steps": 780,
                "rollout": {"stages": [{"until_step": 780, "max_response": 8192}]},
                "data": {"offline_difficulty_filter": True},
            },
            "or1-7b-multistage": {"model_path": "/models/DeepSeek-R1-Distill-Qwen-7B", "steps": 2160},
            "or1-32b-multistage": {
                "model_path": "/models/DeepSeek-R1-Distill-Qwen-32B",
                "steps": 1120,
                "rollout": {
                    "stages": [
                        {"until_step": 400, "max_response": 16384},
                        {"until_step": 800, "max_response": 24576},
                        {"until_step": 1000000000, "max_response": 32768},
                    ]
                },
                "engine": "deepspeed",
                "zero_stage": 3,
            },
        },
    )
)
