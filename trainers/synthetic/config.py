from pydantic import Field

from trainers.base import TrainerConfig


class SyntheticConfig(TrainerConfig):
    """Synthetic learning curves with no model behind them: for trying the platform, load tests of the
    metric path, and exercising failure, cancellation and resume without waiting on real training."""

    steps: int = Field(1000, ge=1, le=100_000_000, description="number of steps to log (step 0 .. steps-1)")
    keys: int = Field(
        4, ge=1, le=1000, description="metric keys logged each step (train/loss, train/reward, ...)"
    )
    seed: int = Field(0, description="random seed of the noise")
    sleep_per_step: float = Field(0.0, ge=0, le=60, description="seconds to sleep after each step (pacing)")
    checkpoint_every: int = Field(0, ge=0, description="checkpoint every N steps (0: only at the end)")
    samples_every: int = Field(
        0, ge=0, le=1_000_000, description="log 2 samples every N steps (0: none; fault drills count them)"
    )
    evaluate_every: int = Field(
        0,
        ge=0,
        le=1_000_000,
        description="log an evaluation every N steps (0: none; fault drills count them)",
    )
    fail_at_step: int | None = Field(None, ge=0, description="raise an error at this step (to test failures)")
