from pydantic import Field

from trainers.base import TrainerConfig
from trainers.common.compute_config import ProcessLayoutFields


class RegressionConfig(ProcessLayoutFields, TrainerConfig):
    """A small MLP fit by Adam to generated regression data: a real training loop that takes seconds.
    It checks the platform's multi-process path (``nproc_per_node``, ``nodes``: each rank takes its
    share of every global batch, gradients are averaged across the ranks) before a long run uses it."""

    steps: int = Field(50, ge=1, le=10_000_000, description="optimizer steps (step 1 .. steps)")
    batch_size: int = Field(
        64, ge=1, le=1_000_000, description="rows per step, for all ranks together (each takes its share)"
    )
    features: int = Field(8, ge=1, le=4096, description="input features of the generated data")
    hidden: int = Field(16, ge=1, le=4096, description="hidden units of the MLP")
    lr: float = Field(0.01, gt=0, le=10, description="Adam learning rate")
    seed: int = Field(0, description="seed of the data, the target function and the initial weights")
    checkpoint_every: int = Field(0, ge=0, description="checkpoint every N steps (0: only at the end)")
    sleep_per_step: float = Field(0.0, ge=0, le=60, description="seconds to sleep after each step (pacing)")
    fail_at_step: int | None = Field(
        None, ge=1, description="raise an error at this step on the last rank (to test failures)"
    )
