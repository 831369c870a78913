from trainers.base import TrainerSpec, hardware, register

SPEC = register(
    TrainerSpec(
        kind="regression",
        title="Tiny regression (multi-process check)",
        description="A small MLP fit to generated data in seconds, in one process or across "
        "nproc_per_node x nodes ranks: checks a worker's multi-process setup (launcher, rendezvous, "
        "gradient averaging, checkpoints, resume, cancel) before a long run relies on it.",
        config="trainers.regression.config:RegressionConfig",
        entry="trainers.regression.train:train",
        queue="cpu",
        primary_metrics=("train/loss",),
        log_scale_metrics=("train/loss",),
        presets={
            "two-processes": {"steps": 50, "nproc_per_node": 2},
            "two-nodes": {"steps": 50, "nodes": 2},
        },
        preset_hardware={
            "two-processes": hardware(
                "one worker, CPU or GPU; 2 processes (gloo on the CPU, NCCL on 2 GPUs)"
            ),
            "two-nodes": hardware(
                "two workers of the queue, each with a free slot; one process each", nodes=2
            ),
        },
    )
)
