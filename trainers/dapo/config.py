"""Config of the DAPO trainer (seeds-spec 2). The paper's hyperparameters are not public ([U] in the
spec), so every one of them is a field here; the defaults are reasoned guesses, each with its reason
in the description, and the "beta-sweep" preset sweeps the least certain one."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from trainers.base import DatasetRef, TrainerConfig, dataset_field
from trainers.common.compute_config import ModelComputeFields, ProcessLayoutFields, VllmEngineFields
from trainers.common.sample_record import GroupCountField, check_group_count
from trainers.eval.ks import checked_ks, ks_field


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StepsConfig(_Section):
    mode: Literal["delimiter", "marker"] = Field(
        "delimiter", description="split at a delimiter (kept at the end of each step) or at step markers"
    )
    delimiter: str = Field(
        "\n\n", min_length=1, description="step delimiter [U]: a blank line for chain-of-thought text"
    )
    marker: str = Field(r"Step \d+:", min_length=1, description="regular expression of a step marker")
    max_steps: int = Field(
        16, ge=0, description="later steps are merged into the last one (0: no limit); bounds the MC cost"
    )


class GenerateConfig(_Section, VllmEngineFields):
    prompts: int = Field(0, ge=0, description="training prompts used per iteration (0: all)")
    solutions_per_prompt: int = Field(4, ge=1, description="solutions sampled from pi_ref per prompt")
    mc_rollouts: int = Field(
        8, ge=1, description="Monte-Carlo completions per step prefix [U]; 8-16 is usual PRM practice"
    )
    temperature: float = Field(1.0, gt=0, description="temperature of solutions and rollouts (pi_ref)")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus of solutions and rollouts")
    max_new_tokens: int = Field(4096, ge=1, description="token budget of a solution or a rollout")
    engine: Literal["auto", "torch", "vllm"] = Field(
        "auto",
        description="vllm: the colocated vLLM engine (asleep during the update; has never run on a GPU in "
        "orlab's tests: no GPU host available to the project has vLLM); torch: the KV-cache torch "
        "sampler; auto: vLLM when CUDA and vllm are present, else torch",
    )


class CriticConfig(_Section):
    loss: Literal["bce", "mse"] = Field(
        "bce", description="BCE with the MC values as soft labels, or MSE on sigmoid(head) [U]"
    )
    lr: float = Field(1e-5, gt=0, description="AdamW learning rate")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    epochs: int = Field(2, ge=1, description="passes over the step-value data")
    batch_size: int = Field(16, ge=1, description="solutions per step (each gives all its prefixes)")
    max_length: int = Field(4096, ge=8, description="tokens of prompt + steps seen; later prefixes dropped")
    val_fraction: float = Field(0.1, gt=0, lt=1, description="share of prompts held out for calibration")
    eval_every: int = Field(20, ge=0, description="held-out loss/ECE/AUC every N steps (0: start and end)")
    calibration_bins: int = Field(10, ge=2, le=50, description="equal-width bins of the reliability diagram")
    curves: int = Field(4, ge=0, description="held-out solutions whose per-step value curves are logged")


class ActorConfig(_Section):
    beta: float = Field(
        1.0, gt=0, description="KL strength [U]: the log-ratio target is A/beta; A is in [-1, 1]"
    )
    candidates: int = Field(4, ge=2, description="K candidate next steps per state from pi_ref [U]")
    center: bool = Field(
        True,
        description="subtract the per-state mean of log-ratio and A/beta, which removes log Z(s) (an "
        "engineering choice; the paper's stated loss is uncentered). Off, a step pi_ref already takes "
        "with probability ~1 and A > 0 gets an unreachable target log-ratio > 0",
    )
    states: int = Field(0, ge=0, description="states sampled from pi_ref's solutions (0: all prefixes)")
    temperature: float = Field(1.0, gt=0, description="temperature of the candidate steps (pi_ref)")
    max_step_tokens: int = Field(
        512,
        ge=1,
        description="token budget of one candidate step; a step cut there is an intermediate step "
        "(valued by the critic), never a final answer",
    )
    lr: float = Field(1e-6, gt=0, description="AdamW learning rate")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    epochs: int = Field(2, ge=1, description="passes over the offline (state, candidates) data")
    states_per_batch: int = Field(8, ge=1, description="states per step (each with its K candidates)")
    grad_clip: float = Field(1.0, gt=0, description="global gradient-norm clip")


class EvalConfig(_Section):
    every: int = Field(
        0, ge=0, description="evaluate every N actor steps (0: before training and at the end)"
    )
    k: int = Field(4, ge=1, description="samples per problem; val/accuracy is their mean accuracy (avg@k)")
    ks: list[int] = ks_field()
    temperature: float = Field(1.0, ge=0, description="pi_ref's sampling temperature (0: greedy, with k = 1)")
    top_p: float = Field(1.0, gt=0, le=1, description="evaluation nucleus")
    max_new_tokens: int = Field(4096, ge=1, description="token budget of an evaluation answer")
    max_problems: int = Field(0, ge=0, description="evaluate on at most this many problems (0: all)")
    sample_problems: int = Field(
        16,
        ge=0,
        description="the first N evaluation problems (the same ones, with the same seed, at every "
        "evaluation) log their rollouts as samples (phase eval): a problem's solve rate across the run's "
        "evaluations; 0: none",
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


class DAPOConfig(ModelComputeFields, ProcessLayoutFields, TrainerConfig):
    """DAPO (Direct Advantage Policy Optimization): Monte-Carlo step values from pi_ref, a critic trained
    on them and frozen, then the actor regresses log(pi/pi_ref) of K sampled next steps onto A/beta.

    The compute fields (dtype, micro_batch_tokens, gradient_checkpointing, chat_template,
    save_optimizer, retention) apply to the actor and the critic alike; micro_batch_tokens also bounds
    every scoring forward (critic values, reference log-probs). With several ranks (``nproc_per_node``
    x ``nodes``) each samples, scores and trains on its share of every stage's global batch and DDP
    averages the gradients; losses and metrics stay those of the global batch. DAPO trains with torch
    (DDP) only: it has no DeepSpeed engine, so ZeRO does not apply.

    Samples (issue 14): each actor stage logs the K candidate next steps of its first ``sample_groups``
    states (an int, or "all"), one group per state, with the advantage V(s.a) - V(s) and the values it
    came from, the first ``token_stats_groups`` of them with per-token arrays; every evaluation logs the
    rollouts of the first ``eval.sample_problems`` problems (phase eval), the same problems each time.
    ``samples`` is an older configs' knob (states logged)."""

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
        "problems", "training problems with answers; unset: generated arithmetic", default=None
    )
    eval_dataset: DatasetRef | None = dataset_field(
        "problems", "held-out problems for the accuracy; unset: generated held-out arithmetic", default=None
    )
    generated_train: int = Field(2000, ge=1, description="generated arithmetic when no train_dataset")
    generated_eval: int = Field(200, ge=1, description="generated held-out problems when no eval_dataset")
    iterations: int = Field(
        1, ge=1, description="iterative DAPO: regenerate data and retrain the critic with each new actor"
    )
    seed: int = Field(1, description="seed of sampling, splits and data order")
    steps: StepsConfig = Field(default_factory=StepsConfig)
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    critic: CriticConfig = Field(default_factory=CriticConfig)
    actor: ActorConfig = Field(default_factory=ActorConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    dataset_name: str = Field(
        "dapo", min_length=1, max_length=150, description="published step values: NAME-step-values-iterI"
    )
    sample_groups: GroupCountField = Field(
        8,
        description="states whose K candidate next steps are logged as samples at each actor stage, one "
        "group per state (group_index = the state, member_index = the candidate), with the advantage "
        "V(s.a) - V(s), the value of the next state and the verifier's verdict on a final step; 'all': "
        "every state; 0: none",
    )
    token_stats_groups: int = Field(
        1,
        ge=0,
        description="of the logged states, how many also log per-token arrays of their candidates: "
        "character offsets, pi_ref's log-probs and entropies (one no-gradient forward of K rows)",
    )
    samples: int | None = Field(
        None, ge=0, description="older configs' knob, still read: when set, the number of states logged"
    )
    reward_processes: int = Field(2, ge=1, description="processes of the reward-scoring pool")
    threads: int = Field(0, ge=0, description="torch CPU threads (0: torch's default)")

    _groups = field_validator("sample_groups", mode="before")(check_group_count)

    @model_validator(mode="after")
    def _check(self):
        if self.model_path != "tiny" and self.init_from_run is None and not self.model_path:
            raise ValueError("model_path is required")
        return self
