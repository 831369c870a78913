"""Registers the tabular trainer (kind "tabular") with its presets. Imports only trainers.base."""

from trainers.base import TrainerSpec, register

_GARNET = {"kind": "garnet", "states": 20, "actions": 5, "branching": 3, "seed": 0, "gamma": 0.9}

PRESETS = {
    "npg-garnet": {"method": "softmax_npg", "step_size": 1.0, "iterations": 200, "mdp": _GARNET},
    "softmax-pg-garnet": {"method": "softmax_pg", "step_size": 1.0, "iterations": 5000, "mdp": _GARNET},
    "projected-pg-garnet": {"method": "projected_pg", "step_size": 1.0, "iterations": 300, "mdp": _GARNET},
    "entropy-npg": {
        "method": "entropy_softmax_npg",
        "step_size": 0.5,
        "tau": 0.1,
        "iterations": 200,
        "mdp": _GARNET,
    },
    # soft_pi has no step size (pi <- softmax(Q_tau / tau)): its preset names none
    "soft-pi": {"method": "soft_pi", "tau": 0.1, "iterations": 30, "mdp": _GARNET},
    "hadamard": {
        "method": "hadamard_pg",
        "step_size": 0.1,
        "iterations": 3000,
        "renormalize": True,
        "mdp": _GARNET,
    },
    "chain-softmax-pg": {
        "method": "softmax_pg",
        "step_size": 1.0,
        "iterations": 20000,
        "mdp": {"kind": "named", "name": "chain", "gamma": 0.9},
    },
    # Long enough to cancel, checkpoint and resume by hand (about a minute on a laptop).
    "long-npg": {
        "method": "softmax_npg",
        "step_size": 0.1,
        "iterations": 200_000,
        "checkpoint_every": 2000,
        "mdp": _GARNET,
    },
}

SPEC = register(
    TrainerSpec(
        kind="tabular",
        title="Tabular policy gradient",
        description="Exact policy gradient methods on small MDPs (projected, softmax, natural, entropy-regularised, "
        "soft policy iteration, Hadamard), logging the optimality gap per iteration to check the convergence "
        "rates of arXiv 2404.03372 and 2305.19575.",
        config="trainers.tabular.config:TabularConfig",
        entry="trainers.tabular.train:train",
        queue="short",  # seconds to minutes on a CPU: README "Queues and the run lifecycle"
        primary_metrics=("gap", "entropy"),
        log_scale_metrics=("gap", "gap_inf", "dist_to_opt"),
        panels=("rates",),  # the run page fits the theory's rates on the logged gap
        presets=PRESETS,
        sweep_presets={
            # The rates papers' comparison: each method at a small and a large step size, 3 MDP seeds.
            "methods-x-step-size": {
                "preset": "npg-garnet",
                "grid": {
                    "method": ["projected_pg", "softmax_pg", "softmax_npg"],
                    "step_size": [0.1, 1.0],
                    "mdp.seed": [0, 1, 2],
                },
            },
        },
    )
)
