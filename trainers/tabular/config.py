"""Configuration of the tabular policy-gradient trainer (what the web form and the CLI validate).

A config names one update rule (``method``), its step size, the entropy weight ``tau`` for the
regularised methods, and an MDP given in one of three forms: explicit arrays, a seeded random
"Garnet" MDP, or one of a few small named MDPs. Every check lives here, in pydantic validators, so a
bad config fails with per-field messages (``mdp.P``, ``step_size``...) before any numpy is touched.

This module imports no numpy: the web app reads it to draw the form and check launches.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from trainers.base import TrainerConfig, format_errors  # noqa: F401 (the CLI's error lines, re-exported)

Method = Literal[
    "projected_pg",
    "projected_q_ascent",
    "softmax_pg",
    "softmax_npg",
    "entropy_softmax_pg",
    "entropy_softmax_npg",
    "soft_pi",
    "hadamard_pg",
]

#: Methods that optimise the entropy-regularised objective V_tau; they need tau > 0 and are scored
#: against the regularised optimum.
REGULARISED_METHODS = frozenset({"entropy_softmax_pg", "entropy_softmax_npg", "soft_pi"})

#: Methods whose update multiplies a step size eta: all but soft_pi (trainers.tabular.methods.update).
STEP_SIZE_METHODS = frozenset(
    {
        "projected_pg",
        "projected_q_ascent",
        "softmax_pg",
        "softmax_npg",
        "entropy_softmax_pg",
        "entropy_softmax_npg",
        "hadamard_pg",
    }
)

#: Names accepted by ``{kind: "named"}``; trainers.tabular.mdp.NAMED_MDPS builds them (kept here as
#: plain strings so that this module stays numpy-free).
NamedMDPName = Literal["chain", "two_state", "grid"]

#: Rows of P and rho must sum to one within this tolerance.
SUM_TOL = 1e-8

GAMMA_DESCRIPTION = "discount factor gamma, in [0, 1)"


def _invalid(message: str) -> PydanticCustomError:
    """An error whose message is shown as is (a plain ValueError would be prefixed "Value error, ")."""
    return PydanticCustomError("invalid_value", "{message}", {"message": message})


def _field_error(model: str, field: str, message: str, value: Any) -> ValidationError:
    """A ValidationError located at ``field`` (raised from a model validator, it keeps that location,
    so the form can show it next to the field rather than at the top of the form)."""
    details = InitErrorDetails(type=_invalid(message), loc=(field,), input=value)
    return ValidationError.from_exception_data(model, [details])


def _check_distribution(values: list[float], what: str) -> None:
    for x in values:
        if not math.isfinite(x):
            raise _invalid(f"{what} has a non-finite entry {x}")
        if x < 0:
            raise _invalid(f"{what} has a negative entry {x}")
    total = math.fsum(values)
    if abs(total - 1.0) > SUM_TOL:
        raise _invalid(f"{what} sums to {total!r}, not 1 (tolerance {SUM_TOL:g})")


class ExplicitMDP(TrainerConfig):
    """An MDP written out in full: transition tensor P, rewards r, discount gamma, start distribution rho."""

    kind: Literal["explicit"] = Field("explicit", description="explicit: P, r, gamma and rho are given")
    P: list[list[list[float]]] = Field(
        description="transition probabilities P[s][a][s'] (S x A x S); each row P[s][a] sums to 1"
    )
    r: list[list[float]] = Field(description="reward r[s][a] (S x A), any finite numbers")
    gamma: float = Field(0.9, ge=0.0, lt=1.0, description=GAMMA_DESCRIPTION)
    rho: list[float] | None = Field(
        None, description="start-state distribution rho[s] (length S, sums to 1); default uniform"
    )

    @field_validator("P")
    @classmethod
    def _check_P(cls, P: list[list[list[float]]]) -> list[list[list[float]]]:
        n_states = len(P)
        if n_states < 1:
            raise _invalid("needs at least one state (S >= 1)")
        n_actions = len(P[0])
        if n_actions < 1:
            raise _invalid("needs at least one action (P[0] is empty, A >= 1)")
        for s, rows in enumerate(P):
            if len(rows) != n_actions:
                raise _invalid(
                    f"P[{s}] has {len(rows)} actions but P[0] has {n_actions} (shape must be S x A x S)"
                )
            for a, row in enumerate(rows):
                if len(row) != n_states:
                    raise _invalid(
                        f"P[{s}][{a}] has {len(row)} entries, expected S={n_states} (one per next state)"
                    )
                _check_distribution(row, f"P[{s}][{a}]")
        return P

    @field_validator("r")
    @classmethod
    def _check_r(cls, r: list[list[float]], info: ValidationInfo) -> list[list[float]]:
        for s, row in enumerate(r):
            for a, x in enumerate(row):
                if not math.isfinite(x):
                    raise _invalid(f"r[{s}][{a}] is not finite ({x})")
        P = info.data.get("P")
        if P is None:  # P itself was invalid; its error is reported there
            return r
        n_states, n_actions = len(P), len(P[0])
        if len(r) != n_states:
            raise _invalid(f"r has {len(r)} rows, expected S={n_states} (shape S x A, as P)")
        for s, row in enumerate(r):
            if len(row) != n_actions:
                raise _invalid(f"r[{s}] has {len(row)} entries, expected A={n_actions}")
        return r

    @field_validator("rho")
    @classmethod
    def _check_rho(cls, rho: list[float] | None, info: ValidationInfo) -> list[float] | None:
        if rho is None:
            return rho
        P = info.data.get("P")
        if P is not None and len(rho) != len(P):
            raise _invalid(f"rho has {len(rho)} entries, expected S={len(P)}")
        _check_distribution(rho, "rho")
        return rho


class GarnetMDP(TrainerConfig):
    """A seeded random MDP: every (s, a) moves to ``branching`` distinct random successor states with
    Dirichlet(1) probabilities; rewards r ~ U[0, 1]; rho uniform. The same seed gives the same MDP."""

    kind: Literal["garnet"] = Field(description="garnet: a seeded random MDP")
    states: int = Field(ge=1, le=300, description="number of states S")
    actions: int = Field(ge=1, le=50, description="number of actions A")
    branching: int = Field(ge=1, description="successor states per (s, a), at most S")
    seed: int = Field(0, ge=0, description="random seed; the same seed gives the same MDP")
    gamma: float = Field(0.9, ge=0.0, lt=1.0, description=GAMMA_DESCRIPTION)

    @field_validator("branching")
    @classmethod
    def _branching_at_most_states(cls, branching: int, info: ValidationInfo) -> int:
        states = info.data.get("states")
        if states is not None and branching > states:
            raise _invalid(f"must be <= states ({states}): the successors of (s, a) are distinct states")
        return branching


class NamedMDP(TrainerConfig):
    """One of a few small hand-made MDPs (see trainers.tabular.mdp for what each one is)."""

    kind: Literal["named"] = Field(description="named: a small built-in MDP")
    name: NamedMDPName = Field(
        description="chain: 5-state chain whose 'cash in' action is tempting but short-sighted; "
        "two_state: 2 states, stay for 0.4 or move towards a rewarding state; "
        "grid: 3x3 grid, slippery moves, reward 1 in the absorbing corner"
    )
    gamma: float = Field(0.9, ge=0.0, lt=1.0, description=GAMMA_DESCRIPTION)


MDPConfig = Annotated[ExplicitMDP | GarnetMDP | NamedMDP, Field(discriminator="kind")]
_MDP_KINDS: dict[str, type[TrainerConfig]] = {"explicit": ExplicitMDP, "garnet": GarnetMDP, "named": NamedMDP}


class TabularConfig(TrainerConfig):
    """Exact (full-information) policy optimisation on a small MDP: one of eight update rules from the
    tabular policy-gradient theory papers (arXiv 2404.03372 and 2305.19575)."""

    method: Method = Field(
        description="update rule: projected_pg (simplex PG + projection), projected_q_ascent (projection of "
        "pi + eta Q), softmax_pg, softmax_npg, entropy_softmax_pg, entropy_softmax_npg, soft_pi (soft policy "
        "iteration), hadamard_pg (pi = theta^2)"
    )
    # Optional in the schema because soft_pi has no step size (the theory's soft policy iteration is
    # pi <- softmax(Q_tau / tau)); every other method demands it (checked below, per method).
    step_size: float | None = Field(
        None,
        gt=0.0,
        allow_inf_nan=False,
        description="constant step size eta; required by every method but soft_pi, which has none "
        "(it is the alpha = 1 case of entropy NPG) and ignores one given",
    )
    tau: float = Field(
        0.1,
        ge=0.0,
        allow_inf_nan=False,
        description="entropy weight tau; must be > 0 for entropy_softmax_pg, entropy_softmax_npg and soft_pi",
    )
    iterations: int = Field(
        200, ge=1, le=1_000_000, description="number of updates; steps 0..iterations are logged"
    )
    renormalize: bool = Field(
        True, description="hadamard_pg only: put each theta_s back on the unit sphere after every step"
    )
    checkpoint_every: int = Field(
        0, ge=0, description="also checkpoint every N iterations (0: only a final checkpoint)"
    )
    mdp: MDPConfig = Field(description="the MDP: explicit arrays, a seeded random garnet, or a named one")

    @field_validator("tau")
    @classmethod
    def _tau_positive_when_regularised(cls, tau: float, info: ValidationInfo) -> float:
        method = info.data.get("method")
        if method in REGULARISED_METHODS and tau <= 0:
            raise _invalid(f"must be > 0 for method {method} (it optimises the entropy-regularised value)")
        return tau

    @field_validator("mdp", mode="before")
    @classmethod
    def _dispatch_mdp_kind(cls, raw: Any) -> Any:
        """Pick the MDP form by ``kind`` ourselves (a missing kind with P present means explicit), so that
        errors are located at ``mdp.gamma`` rather than at ``mdp.<kind>.gamma``."""
        if not isinstance(raw, dict):
            return raw
        kind = raw.get("kind", "explicit" if "P" in raw else None)
        if kind not in _MDP_KINDS:
            known = ", ".join(_MDP_KINDS)
            if kind:
                message = f"unknown MDP kind {kind!r}; expected one of {known}"
            else:
                message = f"missing: one of {known} (a mapping with P is taken as explicit)"
            raise _field_error("mdp", "kind", message, kind)
        return _MDP_KINDS[kind].model_validate({**raw, "kind": kind})

    @model_validator(mode="after")
    def _step_size_where_the_method_uses_one(self) -> TabularConfig:
        if self.step_size is None and self.method in STEP_SIZE_METHODS:
            raise _field_error(
                "TabularConfig",
                "step_size",
                f"required for method {self.method} (only soft_pi has no step size)",
                None,
            )
        return self

    @model_validator(mode="after")
    def _entropy_npg_alpha_at_most_one(self) -> TabularConfig:
        # Cen et al.'s entropy NPG mixes log pi with weight 1 - alpha; alpha > 1 would extrapolate past
        # soft policy iteration, which the theory does not cover.
        if self.method == "entropy_softmax_npg":
            gamma = self.mdp.gamma
            alpha = self.step_size * self.tau / (1.0 - gamma)
            if alpha > 1.0 + 1e-12:
                raise _field_error(
                    "TabularConfig",
                    "step_size",
                    f"entropy_softmax_npg needs alpha = step_size*tau/(1-gamma) <= 1, got alpha = {alpha:.6g}; "
                    f"use step_size <= (1-gamma)/tau = {(1.0 - gamma) / self.tau:.6g} (alpha = 1 is soft_pi)",
                    self.step_size,
                )
        return self

    @property
    def regularised(self) -> bool:
        return self.method in REGULARISED_METHODS
