"""Finite discounted MDPs as numpy arrays, and builders for the three config forms.

An ``MDP`` holds P[s, a, s'] (transition probabilities), r[s, a] (rewards), gamma and rho[s] (the
start distribution), all float64. ``build_mdp(config.mdp)`` turns a validated config into one:

- explicit: the arrays as given (rho defaults to uniform);
- garnet: a seeded random MDP (``garnet_mdp``);
- named: one of the small MDPs in ``NAMED_MDPS``, each documented on its builder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from trainers.tabular.config import ExplicitMDP, GarnetMDP, NamedMDP


@dataclass(frozen=True)
class MDP:
    P: np.ndarray  # [S, A, S], rows on the simplex
    r: np.ndarray  # [S, A]
    gamma: float
    rho: np.ndarray  # [S], on the simplex

    @property
    def n_states(self) -> int:
        return self.P.shape[0]

    @property
    def n_actions(self) -> int:
        return self.P.shape[1]


def explicit_mdp(P, r, gamma: float, rho=None) -> MDP:
    P = np.asarray(P, dtype=np.float64)
    r = np.asarray(r, dtype=np.float64)
    n_states = P.shape[0]
    rho = np.full(n_states, 1.0 / n_states) if rho is None else np.asarray(rho, dtype=np.float64)
    if P.ndim != 3 or P.shape[2] != n_states or r.shape != P.shape[:2] or rho.shape != (n_states,):
        raise ValueError(f"inconsistent shapes P{P.shape}, r{r.shape}, rho{rho.shape}")
    return MDP(P=P, r=r, gamma=float(gamma), rho=rho)


def garnet_mdp(states: int, actions: int, branching: int, seed: int = 0, gamma: float = 0.9) -> MDP:
    """Random MDP: each (s, a) has ``branching`` distinct successors drawn uniformly, with Dirichlet(1)
    (i.e. uniform on the simplex) probabilities; r ~ U[0, 1]; rho uniform. Deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    # The first `branching` entries of a random permutation of the states, for every (s, a) at once.
    successors = rng.random((states, actions, states)).argsort(axis=-1)[..., :branching]
    probabilities = rng.dirichlet(np.ones(branching), size=(states, actions))
    P = np.zeros((states, actions, states))
    np.put_along_axis(P, successors, probabilities, axis=-1)
    r = rng.random((states, actions))
    return MDP(P=P, r=r, gamma=float(gamma), rho=np.full(states, 1.0 / states))


def chain_mdp(gamma: float = 0.9, length: int = 5) -> MDP:
    """A chain of ``length`` states, 0 .. length-1, started uniformly.

    Action 0 ("cash in") pays 0.2 at once and sends the agent back to state 0. Action 1 ("advance")
    pays nothing and moves one state right; in the last state it pays 1 and stays there. Cashing in
    is the tempting short-sighted choice: for gamma close to 1 (0.9: 0.9^4/(1-0.9) = 6.6 > 2) always
    advancing is optimal, while for small gamma (0.5) cashing in is optimal except near the end of the
    chain. Softmax PG is known to plateau on chains like this one."""
    P = np.zeros((length, 2, length))
    r = np.zeros((length, 2))
    for s in range(length):
        P[s, 0, 0] = 1.0
        r[s, 0] = 0.2
        P[s, 1, min(s + 1, length - 1)] = 1.0
    r[length - 1, 1] = 1.0
    return MDP(P=P, r=r, gamma=float(gamma), rho=np.full(length, 1.0 / length))


def two_state_mdp(gamma: float = 0.9) -> MDP:
    """Two states, two actions, deterministic. In state 0, "stay" pays 0.4 and "go" pays 0 and moves to
    state 1; in state 1, "stay" pays 1 and "go" pays 0 and moves back to state 0. For gamma > 0.4 the
    optimal policy goes to state 1 and stays there; the immediate reward says otherwise."""
    P = np.zeros((2, 2, 2))
    P[0, 0, 0] = P[0, 1, 1] = P[1, 0, 1] = P[1, 1, 0] = 1.0
    r = np.array([[0.4, 0.0], [1.0, 0.0]])
    return MDP(P=P, r=r, gamma=float(gamma), rho=np.array([0.5, 0.5]))


def grid_mdp(gamma: float = 0.9, size: int = 3, slip: float = 0.2) -> MDP:
    """A ``size`` x ``size`` grid (state = row*size + col), started uniformly. Actions up, down, left,
    right move one cell with probability 1 - ``slip`` and leave the agent in place otherwise; moves
    into a wall stay put. The bottom-right corner is absorbing and pays 1 per step for every action
    (so all its actions are optimal: a tie); every other reward is 0. The optimal policy walks to
    the corner along any shortest path (several are optimal)."""
    n = size * size
    moves = [(-1, 0), (1, 0), (0, -1), (0, 1)]
    P = np.zeros((n, 4, n))
    r = np.zeros((n, 4))
    goal = n - 1
    for s in range(n):
        row, col = divmod(s, size)
        for a, (dr, dc) in enumerate(moves):
            if s == goal:
                P[s, a, s] = 1.0
                r[s, a] = 1.0
                continue
            nr, nc = min(max(row + dr, 0), size - 1), min(max(col + dc, 0), size - 1)
            P[s, a, nr * size + nc] += 1.0 - slip
            P[s, a, s] += slip
    return MDP(P=P, r=r, gamma=float(gamma), rho=np.full(n, 1.0 / n))


NAMED_MDPS: dict[str, Callable[[float], MDP]] = {
    "chain": chain_mdp,
    "two_state": two_state_mdp,
    "grid": grid_mdp,
}


def build_mdp(config: ExplicitMDP | GarnetMDP | NamedMDP) -> MDP:
    """The MDP described by a validated ``TabularConfig.mdp``."""
    if isinstance(config, ExplicitMDP):
        return explicit_mdp(config.P, config.r, config.gamma, config.rho)
    if isinstance(config, GarnetMDP):
        return garnet_mdp(config.states, config.actions, config.branching, config.seed, config.gamma)
    if isinstance(config, NamedMDP):
        return NAMED_MDPS[config.name](config.gamma)
    raise TypeError(f"not an MDP config: {config!r}")
