"""Config of the OR1/MAGIC trainer. Defaults are the published recipe (seeds-spec 1.3); the
"tiny-cpu-demo" preset scales it down to the tiny model on the CPU."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from trainers.base import DatasetRef, TrainerConfig, dataset_field
from trainers.common.compute_config import ModelComputeFields, ProcessLayoutFields, VllmEngineFields
from trainers.common.sample_record import GroupCountField, check_group_count
from trainers.eval.ks import checked_ks, ks_field


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AlgoConfig(_Section):
    eps: float = Field(1e-6, gt=0, description="added to the group std (not the variance)")
    filter_zero_adv_groups: bool = Field(True, description="drop groups whose rewards are all 0 or all 1")
    kl_coef: float = Field(0.0, ge=0, description="KL-to-reference loss weight (OR1: none)")
    loss_agg: Literal["token_mean_global", "verl_compat"] = Field(
        "token_mean_global", description="token mean over the batch (paper) or verl's micro-batch weighting"
    )
    clip_low: float = Field(0.2, gt=0, lt=1, description="PPO clip below 1")
    clip_high: float = Field(0.2, gt=0, description="PPO clip above 1 (> clip_low: clip-higher)")
    ppo_epochs: int = Field(1, ge=1, description="passes over each rollout batch")
    mini_batches: int = Field(1, ge=1, description="optimizer steps per pass; 1 = on-policy (OR1)")
    truncated_adv_mask: Literal["none", "before", "after"] = Field(
        "none",
        description="none (OR1), or zero the advantage of truncated responses before/after the group stats",
    )


class EntropyConfig(_Section):
    adaptive: bool = Field(True, description="adaptive entropy control (MAGIC); off: a fixed coefficient")
    target: float = Field(0.2, ge=0, description="target entropy (nats/token)")
    delta: float = Field(1e-4, gt=0, description="coefficient step per training step")
    min: float = Field(0.0, ge=0, description="coefficient floor")
    max: float = Field(5e-3, ge=0, description="coefficient cap")
    fixed_coef: float = Field(0.0, ge=0, description="entropy bonus weight when adaptive is off")


class StageConfig(_Section):
    until_step: int = Field(description="this stage lasts until (excluding) this step")
    max_response: int = Field(ge=1, description="response length limit (tokens) in this stage")


class RolloutConfig(_Section, VllmEngineFields):
    n: int = Field(16, ge=1, description="samples per prompt (group size)")
    prompts_per_step: int = Field(256, ge=1, description="prompts per training step")
    temperature: float = Field(1.0, gt=0, description="sampling temperature of the rollouts")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling")
    top_k: int = Field(-1, description="top-k (-1 or 0: off)")
    max_prompt: int = Field(
        2048,
        ge=1,
        description="training prompts longer than this (tokens, as rendered with the chat template) are "
        "dropped at load (metric data/prompts_over_max), as OR1 drops them",
    )
    stages: list[StageConfig] = Field(
        default_factory=lambda: [
            StageConfig(until_step=780, max_response=8192),
            StageConfig(until_step=1740, max_response=16384),
            StageConfig(until_step=10**9, max_response=32768),
        ],
        description="multi-stage context schedule (OR1 7B: 8K -> 16K -> 32K)",
    )
    engine: Literal["auto", "torch", "vllm"] = Field(
        "auto",
        description="vllm: the colocated vLLM engine (asleep during the update; has never run on a GPU in "
        "orlab's tests: no GPU host available to the project has vLLM); torch: the KV-cache torch "
        "sampler; auto: vLLM when CUDA and vllm are present, else torch",
    )


class OptimConfig(_Section):
    lr: float = Field(1e-6, gt=0, description="AdamW learning rate (constant)")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay")
    grad_clip: float = Field(1.0, gt=0, description="global gradient-norm clip")


class DataConfig(_Section):
    offline_difficulty_filter: bool = Field(
        False,
        description="before training, drop prompts the starting policy solves always or never; a problem "
        "with a stored pass_rate (0..1) uses it instead of being sampled",
    )
    difficulty_samples: int = Field(16, ge=1, description="samples per prompt for the difficulty estimate")
    online_filter: bool = Field(
        True, description="at each stage switch, drop prompts solved n/n during the previous stage"
    )
    generated_train: int = Field(2000, ge=1, description="generated arithmetic when no train_dataset")
    generated_eval: int = Field(200, ge=1, description="generated held-out problems when no eval_dataset")


class EvalConfig(_Section):
    every: int = Field(20, ge=0, description="evaluate every N steps (0: only at the end)")
    k: int = Field(8, ge=1, description="samples per problem (avg@k, pass@k)")
    ks: list[int] = ks_field()
    temperature: float = Field(0.6, gt=0, description="evaluation temperature")
    top_p: float = Field(1.0, gt=0, le=1, description="evaluation nucleus")
    max_problems: int = Field(0, ge=0, description="evaluate on at most this many problems (0: all)")
    sample_problems: int = Field(
        16,
        ge=0,
        description="the first N evaluation problems (the same ones, with the same seed, at every "
        "evaluation) log their rollouts as samples (phase eval), so a prompt's solve rate can be followed "
        "over training even when training prompts never repeat; 0: none",
    )
    samples_per_problem: int = Field(
        0,
        ge=0,
        description="rollouts logged per such problem (0: all k); the volume is N x this per evaluation",
    )

    @field_validator("ks")
    @classmethod
    def _ks_within_k(cls, ks: list[int], info):
        # pass@k needs k samples per problem at least (k is validated before ks: declared first)
        return checked_ks(ks, info.data["k"]) if "k" in info.data else ks


class RLConfig(ModelComputeFields, ProcessLayoutFields, TrainerConfig):
    """Skywork-OR1 (MAGIC): GRPO without KL or critic, on-policy, rejection of zero-advantage groups,
    adaptive entropy control, multi-stage context length, binary verifiable rewards.

    What a run logs as samples (issue 14): ``sample_groups_per_step`` whole groups per step (an int, or
    "all"), each completion with its group's filter status; ``token_stats_groups_per_step`` of them with
    per-token offsets, log-probs and entropies (one extra no-gradient forward over their rows); and at
    every evaluation the rollouts of the first ``eval.sample_problems`` problems (``eval.samples_per_problem``
    each), the same problems each time. ``samples_per_step`` is an older configs' knob (samples, rounded up
    to whole groups)."""

    model_path: str = Field(
        "tiny",
        description="'tiny', a model name from the workers' catalogue (ORLAB_MODEL_ROOTS, e.g. Qwen/Qwen2.5-7B), or "
        "'checkpoint:<id>' (a policy checkpoint of a run in the same project). A directory path only when "
        "run standalone (the platform refuses paths)",
    )
    init_from_run: int | None = Field(
        None, description="start from the newest checkpoint of this run (e.g. an SFT warm start)"
    )
    train_dataset: DatasetRef | None = dataset_field(
        "problems", "training problems (math answers / code tests); unset: generated arithmetic", default=None
    )
    eval_dataset: DatasetRef | None = dataset_field(
        "problems", "benchmark problems for avg@k/pass@k; unset: generated held-out arithmetic", default=None
    )
    steps: int = Field(100, ge=1, description="training steps")
    seed: int = Field(1, description="seed of prompt sampling and rollouts")
    algo: AlgoConfig = Field(default_factory=AlgoConfig)
    entropy: EntropyConfig = Field(default_factory=EntropyConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    checkpoint_every: int = Field(20, ge=0, description="checkpoint every N steps (0: only at the end)")
    sample_groups_per_step: GroupCountField = Field(
        4,
        description="whole groups (one prompt's n rollouts) of each step logged as samples, each with its "
        "rewards, advantages, verdicts, finish reasons and the filter's decision on the group (kept, "
        "zero_variance, solved_all, unsolved_all); 'all': every group of the step; 0: none",
    )
    token_stats_groups_per_step: int = Field(
        1,
        ge=0,
        description="of the logged groups, how many also log per-token arrays: character offsets, the "
        "trainer's log-probs and entropies (one extra no-gradient forward over their rows, before the "
        "update) and, under vLLM, the engine's log-probs",
    )
    samples_per_step: int | None = Field(
        None,
        ge=0,
        description="older configs' knob, still read: when set, the step logs ceil(samples_per_step / n) "
        "whole groups instead of sample_groups_per_step (0: none)",
    )
    reward_processes: int = Field(2, ge=1, description="processes of the reward-scoring pool")
    threads: int = Field(0, ge=0, description="torch CPU threads (0: torch's default)")
    engine: Literal["torch", "deepspeed"] = Field("torch", description="training engine")
    zero_stage: int = Field(2, ge=0, le=3, description="DeepSpeed ZeRO stage (engine=deepspeed)")

    _groups = field_validator("sample_groups_per_step", mode="before")(check_group_count)

    @model_validator(mode="after")
    def _check(self):
        if self.model_path != "tiny" and self.init_from_run is None and not self.model_path:
            raise ValueError("model_path is required")
        bounds = [s.until_step for s in self.rollout.stages]
        if bounds != sorted(bounds) or len(set(bounds)) != len(bounds):
            raise ValueError("rollout.stages must have strictly increasing until_step")
        return self
