from trainers.base import CPU_ONLY, TrainerSpec, register

SPEC = register(
    TrainerSpec(
        kind="sft",
        title="SFT warm start",
        description="Supervised fine-tuning on problem/solution pairs (loss on the solution tokens), "
        "with greedy held-out accuracy through the math verifier.",
        config="trainers.sft.config:SFTConfig",
        entry="trainers.sft.train:train",
        queue="gpu",
        primary_metrics=("train/loss", "eval/accuracy"),
        dataset_fields=("train_dataset", "eval_dataset"),
        presets={
            "tiny-cpu-demo": {
                "model_path": "tiny",
                # raw prompts, as the RL/DAPO tiny presets (see trainers/rl/spec.py)
                "chat_template": "none",
                "steps": 600,
                "batch_size": 32,
                "lr": 2e-3,
                "eval_every": 100,
            },
        },
        preset_hardware={"tiny-cpu-demo": CPU_ONLY},
    )
)
