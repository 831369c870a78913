from trainers.base import TrainerSpec, register

SPEC = register(
    TrainerSpec(
        kind="synthetic",
        title="Synthetic curves",
        description="Logs synthetic learning curves (no model): try the platform, load-test metrics, "
        "exercise failure, cancellation and resume.",
        config="trainers.synthetic.config:SyntheticConfig",
        entry="trainers.synthetic.train:train",
        queue="cpu",
        primary_metrics=("train/loss", "train/reward"),
        presets={
            "quick": {"steps": 500, "keys": 4, "sleep_per_step": 0.01},
            "slow-live": {"steps": 3000, "keys": 4, "sleep_per_step": 0.02, "checkpoint_every": 200},
            "fails": {"steps": 200, "keys": 2, "fail_at_step": 100, "sleep_per_step": 0.005},
        },
    )
)
