"""RL health presets and the alias table they match metric names through.

An alias (``@entropy``) stands for the names orlab's trainers, TRL's GRPOTrainer and verl log for
one quantity; a rule on an alias watches whichever of them a run logs. TRL's names also appear
with the ``train/`` prefix its W&B/trackio loggers add. A *sum* entry (a tuple of keys) is a
quantity orlab logs in parts: the share of zero-variance groups is solve_none + solve_all.

Where the names come from: trainers/rl/train.py and trainers/dapo (orlab), TRL's
GRPOTrainer._metrics (``entropy``, ``kl``, ``completions/clipped_ratio``, ``frac_reward_zero_std``,
``reward``, ``clip_ratio/region_mean``, ``sampling/sampling_logp_difference/*``; ``grad_norm``
from transformers' Trainer), verl's trainer metrics (``actor/entropy``, ``actor/ppo_kl``,
``actor/pg_clipfrac``, ``actor/grad_norm``, ``response_length/clip_ratio``,
``critic/score/mean``, ``training/rollout_probs_diff_*``)."""

from __future__ import annotations


def _trl(*names: str) -> list[str]:
    return [n for name in names for n in (name, f"train/{name}")]


ALIASES: dict[str, list[str | tuple[str, ...]]] = {
    "entropy": ["policy/entropy", "actor/entropy", *_trl("entropy")],
    "length_clip_ratio": ["response_length/clip_ratio", *_trl("completions/clipped_ratio")],
    "zero_variance_share": [
        ("batch/solve_none_ratio", "batch/solve_all_ratio"),  # orlab: never / always solved groups
        *_trl("frac_reward_zero_std"),
    ],
    "reward_mean": ["reward/accuracy", "reward/mean", "critic/score/mean", *_trl("reward")],
    "grad_norm": ["actor/grad_norm", *_trl("grad_norm")],
    "kl": ["actor/ppo_kl", "actor/kl_loss", *_trl("kl")],
    "clip_fraction": ["actor/pg_clipfrac", *_trl("clip_ratio/region_mean")],
    "logprob_gap": [
        "rollout/logprob_diff_mean",
        "training/rollout_probs_diff_mean",
        *_trl("sampling/sampling_logp_difference/mean"),
    ],
}


def alias_sources(key: str) -> list[str | tuple[str, ...]] | None:
    """What a rule's key watches: the alias' entries for ``@name``, else None (a literal key)."""
    if key.startswith("@"):
        return ALIASES.get(key[1:])
    return None


def sum_key(parts: tuple[str, ...]) -> str:
    """The event key of a sum entry."""
    return "+".join(parts)


def _collapse_params() -> dict:
    """Today's entropy-collapse flag (webapp.runs.collapse) with its ORLAB_COLLAPSE_* settings."""
    from webapp.runs.collapse import Rule as CollapseRule

    r = CollapseRule.from_settings()
    return {
        "ratio": r.ratio,
        "window": r.window,
        "floor": r.floor,
        "smooth": r.smooth,
        "min_points": r.min_points,
    }


# name -> (title, [rule fields]); each field dict becomes one ordinary Rule when applied.
def presets() -> dict[str, tuple[str, list[dict]]]:
    return {
        "entropy_collapse": (
            "Entropy collapse (the runs table's flag, on ingest)",
            [
                {
                    "name": "entropy collapse",
                    "kind": "collapse",
                    "key": "@entropy",
                    "params": _collapse_params(),
                }
            ],
        ),
        "length_clipping": (
            "Length clipping: share of completions cut at the length limit >= 0.2",
            [
                {
                    "name": "length clipping >= 0.2",
                    "kind": "threshold",
                    "key": "@length_clip_ratio",
                    "params": {"op": ">=", "value": 0.2},
                }
            ],
        ),
        "zero_variance_groups": (
            "Zero-variance groups: share of groups with one reward for every sample >= 0.5",
            [
                {
                    "name": "zero-variance groups >= 0.5",
                    "kind": "threshold",
                    "key": "@zero_variance_share",
                    "params": {"op": ">=", "value": 0.5},
                }
            ],
        ),
        "reward_saturation": (
            "Reward saturation: mean reward / accuracy >= 0.95",
            [
                {
                    "name": "reward saturation >= 0.95",
                    "kind": "threshold",
                    "key": "@reward_mean",
                    "params": {"op": ">=", "value": 0.95},
                }
            ],
        ),
        "grad_norm_spikes": (
            "Grad-norm spikes: z-score >= 4 against the run's own history",
            [
                {
                    "name": "grad-norm spike",
                    "kind": "zscore",
                    "key": "@grad_norm",
                    "params": {"z": 4.0, "direction": "up", "min_points": 20},
                }
            ],
        ),
        "kl_blowup": (
            "Ratio / KL blow-up: KL z-score >= 6, or clip fraction >= 0.3",
            [
                {
                    "name": "KL blow-up",
                    "kind": "zscore",
                    "key": "@kl",
                    "params": {"z": 6.0, "direction": "up", "min_points": 20},
                },
                {
                    "name": "ratio clip fraction >= 0.3",
                    "kind": "threshold",
                    "key": "@clip_fraction",
                    "params": {"op": ">=", "value": 0.3},
                },
            ],
        ),
        "logprob_gap": (
            "Rollout-engine vs trainer log-prob gap (mean) > 0.1",
            [
                {
                    "name": "rollout/trainer log-prob gap > 0.1",
                    "kind": "threshold",
                    "key": "@logprob_gap",
                    "params": {"op": ">", "value": 0.1},
                }
            ],
        ),
    }


def preset_names() -> list[str]:
    return list(presets())
