"""Exact policy evaluation and optimal values for tabular MDPs (float64, linear solves, no sampling).

For a policy pi[s, a] (rows on the simplex), with P_pi = sum_a pi P and r_pi = sum_a pi r:

- V^pi = (I - gamma P_pi)^-1 r_pi and, entropy-regularised with weight tau,
  V_tau^pi = (I - gamma P_pi)^-1 (r_pi + tau H(pi)), H(pi)[s] = -sum_a pi log pi;
- Q[s, a] = r[s, a] + gamma sum_s' P[s, a, s'] V[s'] (Q_tau likewise from V_tau);
- the (soft) advantage Q - tau log pi - V, the plain advantage when tau = 0;
- the discounted visitation d_rho = (1 - gamma) rho^T (I - gamma P_pi)^-1, a distribution.

Optima: ``optimal_values`` runs policy iteration (exact); ``soft_optimal`` runs soft value iteration
(logsumexp) and then polishes with a few exact soft-policy-iteration steps, because the tests measure
regularised gaps down to 1e-12 and value iteration alone would leave an error of that order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainers.tabular.mdp import MDP

#: log pi is taken as log(max(pi, TINY)): projected methods reach exact zeros, and 0 * log(TINY) = 0.
TINY = 1e-300


def logsumexp(x: np.ndarray) -> np.ndarray:
    """Row-wise log sum exp, stable for large and -inf-free inputs."""
    m = x.max(axis=-1, keepdims=True)
    return (m + np.log(np.exp(x - m).sum(axis=-1, keepdims=True)))[..., 0]


def softmax_with_log(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pi, log pi) of row-wise softmax; log pi is computed directly, so it is finite where pi underflows.

    The row maximum is subtracted first and the (small) log-normaliser after: computing
    logits - logsumexp(logits) instead would round at the magnitude of the logits (Q/tau is in the
    thousands for small tau), leaving rows of pi that sum to 1 only within 1e-12, which 1/(1-gamma)
    then amplifies into value errors of 1e-9."""
    z = logits - logits.max(axis=-1, keepdims=True)
    log_pi = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return np.exp(log_pi), log_pi


def safe_log(pi: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(pi, TINY))


def entropy(pi: np.ndarray, log_pi: np.ndarray) -> np.ndarray:
    """Shannon entropy of each row."""
    return -(pi * log_pi).sum(axis=-1)


@dataclass(frozen=True)
class PolicyEvaluation:
    """Everything the update rules and the metrics need about one policy. With tau > 0, ``v`` and ``q``
    are the regularised V_tau and Q_tau."""

    pi: np.ndarray  # [S, A]
    log_pi: np.ndarray  # [S, A], finite
    v: np.ndarray  # [S]
    q: np.ndarray  # [S, A]
    d: np.ndarray  # [S], discounted visitation from rho
    tau: float

    @property
    def advantage(self) -> np.ndarray:
        """Q - tau log pi - V; its pi-weighted row sums are zero."""
        return self.q - self.tau * self.log_pi - self.v[:, None]


def q_values(mdp: MDP, v: np.ndarray) -> np.ndarray:
    return mdp.r + mdp.gamma * (mdp.P @ v)


def _bellman_matrix(mdp: MDP, pi: np.ndarray) -> np.ndarray:
    """I - gamma P_pi."""
    P_pi = np.einsum("sa,sat->st", pi, mdp.P)
    return np.eye(mdp.n_states) - mdp.gamma * P_pi


def evaluate(
    mdp: MDP, pi: np.ndarray, tau: float = 0.0, log_pi: np.ndarray | None = None
) -> PolicyEvaluation:
    """Exact (regularised when tau > 0) values, Q, and visitation of ``pi``."""
    if log_pi is None:
        log_pi = safe_log(pi)
    M = _bellman_matrix(mdp, pi)
    reward = (pi * mdp.r).sum(axis=1)
    if tau > 0:
        reward = reward + tau * entropy(pi, log_pi)
    v = np.linalg.solve(M, reward)
    d = (1.0 - mdp.gamma) * np.linalg.solve(M.T, mdp.rho)
    return PolicyEvaluation(pi=pi, log_pi=log_pi, v=v, q=q_values(mdp, v), d=d, tau=tau)


def policy_value(mdp: MDP, pi: np.ndarray, tau: float = 0.0) -> np.ndarray:
    """V^pi (V_tau^pi when tau > 0), one linear solve."""
    reward = (pi * mdp.r).sum(axis=1)
    if tau > 0:
        reward = reward + tau * entropy(pi, safe_log(pi))
    return np.linalg.solve(_bellman_matrix(mdp, pi), reward)


def visitation(mdp: MDP, pi: np.ndarray) -> np.ndarray:
    """d_rho^pi = (1 - gamma) rho^T (I - gamma P_pi)^-1."""
    return (1.0 - mdp.gamma) * np.linalg.solve(_bellman_matrix(mdp, pi).T, mdp.rho)


def optimal_values(mdp: MDP, max_iterations: int = 10_000) -> tuple[np.ndarray, np.ndarray]:
    """(V*, Q*) by policy iteration: exact up to the linear solve, in finitely many steps."""
    n_states = mdp.n_states
    actions = np.zeros(n_states, dtype=int)
    for _ in range(max_iterations):
        pi = np.zeros((n_states, mdp.n_actions))
        pi[np.arange(n_states), actions] = 1.0
        v = policy_value(mdp, pi)
        q = q_values(mdp, v)
        best = q.argmax(axis=1)
        # Keep the current action unless another is better by more than rounding: with exact ties,
        # switching back and forth would never terminate.
        current = q[np.arange(n_states), actions]
        improve = q[np.arange(n_states), best] > current + 1e-12 * max(1.0, np.abs(q).max())
        if not improve.any():
            return v, q
        actions = np.where(improve, best, actions)
    raise RuntimeError("policy iteration did not terminate")


def optimal_action_mask(q_star: np.ndarray, rel_tol: float = 1e-9) -> np.ndarray:
    """Actions whose Q* is maximal up to rounding (ties, as in the grid's goal state, are all optimal)."""
    scale = max(1.0, float(np.abs(q_star).max()))
    return q_star >= q_star.max(axis=1, keepdims=True) - rel_tol * scale


def soft_optimal(
    mdp: MDP, tau: float, vi_tol: float = 1e-12, max_sweeps: int = 5_000
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(V_tau*, Q_tau*, log pi_tau*) of the entropy-regularised problem.

    Soft value iteration V <- tau logsumexp((r + gamma P V)/tau) (a gamma-contraction), then exact soft
    policy iteration pi <- softmax(Q_tau/tau) from there until V stops changing: it converges
    quadratically near the optimum, so the result is accurate to rounding even for gamma near 1."""
    if tau <= 0:
        raise ValueError("tau must be > 0")
    v = np.zeros(mdp.n_states)
    for _ in range(max_sweeps):
        new = tau * logsumexp(q_values(mdp, v) / tau)
        change = np.abs(new - v).max()
        v = new
        if change <= vi_tol:
            break
    for _ in range(100):
        pi, log_pi = softmax_with_log(q_values(mdp, v) / tau)
        new = evaluate(mdp, pi, tau, log_pi).v
        change = np.abs(new - v).max()
        v = new
        if change <= 8 * np.finfo(float).eps * max(1.0, np.abs(v).max()):
            break
    q = q_values(mdp, v)
    _, log_pi = softmax_with_log(q / tau)
    return v, q, log_pi
