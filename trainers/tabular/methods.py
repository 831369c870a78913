"""The eight exact policy-optimisation update rules, one pure function each, plus their gradients.

Each update takes the current parameters and the exact evaluation of the current policy
(``evaluation.evaluate``) and returns new parameters; the step size multiplies exactly the
expressions of the papers (seeds-spec sections 4 and 5), with d = d_rho^pi and 1 - gamma as written:

- projected_pg (PPG):    pi[s] <- Proj_simplex(pi[s] + eta d(s) Q[s] / (1 - gamma))
- projected_q_ascent:    pi[s] <- Proj_simplex(pi[s] + eta Q[s])
- softmax_pg:            theta += eta d(s) pi A / (1 - gamma)
- softmax_npg:           theta += eta A / (1 - gamma)
- entropy_softmax_pg:    theta += eta d(s) pi (Q_tau - tau log pi - V_tau) / (1 - gamma)
- entropy_softmax_npg:   log pi <- (1 - alpha) log pi + alpha Q_tau / tau - log Z, alpha = eta tau / (1 - gamma)
- soft_pi:               pi <- softmax(Q_tau / tau)   (entropy NPG with alpha = 1)
- hadamard_pg:           pi = theta^2 / sum theta^2, theta += eta 2 d(s) theta A / ((1 - gamma) |theta_s|^2),
                         then optionally theta_s <- theta_s / |theta_s|

Parameters are pi for the projected methods, logits theta for the softmax ones, log pi for entropy
NPG and soft_pi, and theta for Hadamard. Every method starts from the uniform policy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainers.tabular.evaluation import PolicyEvaluation, evaluate, safe_log, softmax_with_log
from trainers.tabular.mdp import MDP

# --------------------------------------------------------------------------------------------------
# Simplex projection


def project_simplex(y: np.ndarray) -> np.ndarray:
    """Euclidean projection of each row of ``y`` onto the probability simplex (sort-based, exact):
    with u the row sorted in decreasing order, the threshold is (sum_{i<=j} u_i - 1)/j for the largest j
    with u_j - (sum_{i<=j} u_i - 1)/j > 0; subtract it and clip at zero."""
    y = np.atleast_2d(np.asarray(y, dtype=np.float64))
    u = -np.sort(-y, axis=1)
    cumulative = np.cumsum(u, axis=1) - 1.0
    j = np.arange(1, y.shape[1] + 1)
    active = u - cumulative / j > 0  # true on a prefix of the sorted row; j = 1 always qualifies
    count = active.sum(axis=1)
    threshold = cumulative[np.arange(y.shape[0]), count - 1] / count
    return np.maximum(y - threshold[:, None], 0.0)


# --------------------------------------------------------------------------------------------------
# Gradients (exposed so that tests can finite-difference them)


def simplex_gradient(mdp: MDP, ev: PolicyEvaluation) -> np.ndarray:
    """dV^pi(rho)/dpi[s, a] = d(s) Q[s, a] / (1 - gamma) (policy gradient theorem, direct parameters)."""
    return ev.d[:, None] * ev.q / (1.0 - mdp.gamma)


def softmax_gradient(mdp: MDP, ev: PolicyEvaluation) -> np.ndarray:
    """dV(rho)/dtheta[s, a] = d(s) pi[s, a] A[s, a] / (1 - gamma). With an evaluation at tau > 0 the
    advantage is the soft one, Q_tau - tau log pi - V_tau, and this is the gradient of V_tau(rho)."""
    return ev.d[:, None] * ev.pi * ev.advantage / (1.0 - mdp.gamma)


def entropy_softmax_gradient(mdp: MDP, ev: PolicyEvaluation) -> np.ndarray:
    """dV_tau(rho)/dtheta (``ev`` must be evaluated with tau > 0)."""
    if ev.tau <= 0:
        raise ValueError("entropy_softmax_gradient needs an evaluation with tau > 0")
    return softmax_gradient(mdp, ev)


def hadamard_policy(theta: np.ndarray) -> np.ndarray:
    squared = theta * theta
    return squared / squared.sum(axis=1, keepdims=True)


def hadamard_gradient(mdp: MDP, theta: np.ndarray, ev: PolicyEvaluation) -> np.ndarray:
    """dV(rho)/dtheta[s, b] = 2 d(s) theta[s, b] A[s, b] / ((1 - gamma) |theta_s|^2) for
    pi = theta^2 / |theta_s|^2; it is orthogonal to theta_s because sum_b pi A = 0."""
    norm2 = (theta * theta).sum(axis=1, keepdims=True)
    return 2.0 * ev.d[:, None] * theta * ev.advantage / ((1.0 - mdp.gamma) * norm2)


# --------------------------------------------------------------------------------------------------
# Updates


def projected_pg_step(mdp: MDP, pi: np.ndarray, ev: PolicyEvaluation, eta: float) -> np.ndarray:
    return project_simplex(pi + eta * simplex_gradient(mdp, ev))


def projected_q_ascent_step(pi: np.ndarray, ev: PolicyEvaluation, eta: float) -> np.ndarray:
    return project_simplex(pi + eta * ev.q)


def softmax_pg_step(mdp: MDP, theta: np.ndarray, ev: PolicyEvaluation, eta: float) -> np.ndarray:
    return theta + eta * softmax_gradient(mdp, ev)


def softmax_npg_step(mdp: MDP, theta: np.ndarray, ev: PolicyEvaluation, eta: float) -> np.ndarray:
    return theta + eta / (1.0 - mdp.gamma) * ev.advantage


def entropy_softmax_pg_step(mdp: MDP, theta: np.ndarray, ev: PolicyEvaluation, eta: float) -> np.ndarray:
    return theta + eta * entropy_softmax_gradient(mdp, ev)


def entropy_npg_alpha(mdp: MDP, eta: float, tau: float) -> float:
    return eta * tau / (1.0 - mdp.gamma)


def entropy_softmax_npg_step(
    mdp: MDP, log_pi: np.ndarray, ev: PolicyEvaluation, eta: float, tau: float
) -> np.ndarray:
    alpha = entropy_npg_alpha(mdp, eta, tau)
    _, new_log_pi = softmax_with_log((1.0 - alpha) * log_pi + alpha * ev.q / tau)
    return new_log_pi


def soft_pi_step(ev: PolicyEvaluation, tau: float) -> np.ndarray:
    _, new_log_pi = softmax_with_log(ev.q / tau)
    return new_log_pi


def hadamard_pg_step(
    mdp: MDP, theta: np.ndarray, ev: PolicyEvaluation, eta: float, renormalize: bool = True
) -> np.ndarray:
    theta = theta + eta * hadamard_gradient(mdp, theta, ev)
    if renormalize:
        theta = theta / np.linalg.norm(theta, axis=1, keepdims=True)
    return theta


# --------------------------------------------------------------------------------------------------
# A uniform face for the training loop


@dataclass(frozen=True)
class Hyper:
    step_size: float | None  # None only for soft_pi, which has no step (config.STEP_SIZE_METHODS)
    tau: float = 0.0
    renormalize: bool = True


#: The name of each method's parameter tensor (also its key in params.safetensors).
PARAMETER_NAME = {
    "projected_pg": "pi",
    "projected_q_ascent": "pi",
    "softmax_pg": "theta",
    "softmax_npg": "theta",
    "entropy_softmax_pg": "theta",
    "entropy_softmax_npg": "log_pi",
    "soft_pi": "log_pi",
    "hadamard_pg": "theta",
}


def initial_params(method: str, n_states: int, n_actions: int) -> np.ndarray:
    """Parameters of the uniform policy."""
    kind = PARAMETER_NAME[method]
    if kind == "pi":
        return np.full((n_states, n_actions), 1.0 / n_actions)
    if kind == "log_pi":
        return np.full((n_states, n_actions), -np.log(n_actions))
    if method == "hadamard_pg":
        return np.full((n_states, n_actions), 1.0 / np.sqrt(n_actions))  # on the unit sphere
    return np.zeros((n_states, n_actions))


def policy(method: str, params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pi, log pi) for ``params``; log pi is clipped at log(1e-300) only where pi is an exact zero."""
    kind = PARAMETER_NAME[method]
    if kind == "pi":
        return params, safe_log(params)
    if kind == "log_pi":
        return np.exp(params), params
    if method == "hadamard_pg":
        pi = hadamard_policy(params)
        return pi, safe_log(pi)
    return softmax_with_log(params)


def evaluate_params(mdp: MDP, method: str, params: np.ndarray, tau: float) -> PolicyEvaluation:
    pi, log_pi = policy(method, params)
    return evaluate(mdp, pi, tau, log_pi)


def update(method: str, mdp: MDP, params: np.ndarray, ev: PolicyEvaluation, hyper: Hyper) -> np.ndarray:
    """One step of ``method`` from ``params``, whose exact evaluation is ``ev``."""
    eta = hyper.step_size
    if method == "projected_pg":
        return projected_pg_step(mdp, params, ev, eta)
    if method == "projected_q_ascent":
        return projected_q_ascent_step(params, ev, eta)
    if method == "softmax_pg":
        return softmax_pg_step(mdp, params, ev, eta)
    if method == "softmax_npg":
        return softmax_npg_step(mdp, params, ev, eta)
    if method == "entropy_softmax_pg":
        return entropy_softmax_pg_step(mdp, params, ev, eta)
    if method == "entropy_softmax_npg":
        return entropy_softmax_npg_step(mdp, params, ev, eta, hyper.tau)
    if method == "soft_pi":
        return soft_pi_step(ev, hyper.tau)
    if method == "hadamard_pg":
        return hadamard_pg_step(mdp, params, ev, eta, hyper.renormalize)
    raise ValueError(f"unknown method {method!r}")
