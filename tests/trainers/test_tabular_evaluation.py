"""Exact evaluation, optima, analytic gradients (against central finite differences), the simplex
projection, the MDP builders, and one step of every update rule of trainers.tabular."""

from __future__ import annotations

import numpy as np
import pytest

from trainers.tabular.config import NamedMDPName
from trainers.tabular.evaluation import (
    evaluate,
    logsumexp,
    optimal_action_mask,
    optimal_values,
    policy_value,
    q_values,
    soft_optimal,
    softmax_with_log,
    visitation,
)
from trainers.tabular.mdp import NAMED_MDPS, chain_mdp, explicit_mdp, garnet_mdp, grid_mdp, two_state_mdp
from trainers.tabular.methods import (
    PARAMETER_NAME,
    Hyper,
    entropy_softmax_gradient,
    hadamard_gradient,
    hadamard_policy,
    initial_params,
    policy,
    project_simplex,
    simplex_gradient,
    softmax_gradient,
    update,
)

FD_STEP = 1e-6
FD_TOL = 1e-6


def random_policy(rng, n_states: int, n_actions: int) -> np.ndarray:
    return softmax_with_log(rng.normal(size=(n_states, n_actions)))[0]


def finite_difference(f, x: np.ndarray) -> np.ndarray:
    """Central differences of the scalar function f at every entry of x."""
    grad = np.zeros_like(x)
    for index in np.ndindex(*x.shape):
        up, down = x.copy(), x.copy()
        up[index] += FD_STEP
        down[index] -= FD_STEP
        grad[index] = (f(up) - f(down)) / (2 * FD_STEP)
    return grad


# ------------------------------------------------------------------------------------------------------
# Evaluation


@pytest.mark.parametrize("gamma", [0.5, 0.9, 0.99])
def test_visitation_is_a_distribution_and_values_solve_bellman(gamma):
    rng = np.random.default_rng(0)
    for seed in range(3):
        mdp = garnet_mdp(8, 4, 3, seed, gamma)
        pi = random_policy(rng, 8, 4)
        ev = evaluate(mdp, pi)
        assert ev.d.sum() == pytest.approx(1.0, abs=1e-12)
        assert np.all(ev.d >= 0)
        assert np.allclose(ev.d, visitation(mdp, pi), atol=1e-15)
        # d = (1 - gamma) rho + gamma d P_pi (the stationarity equation of the discounted visitation)
        P_pi = np.einsum("sa,sat->st", pi, mdp.P)
        assert np.allclose(ev.d, (1 - gamma) * mdp.rho + gamma * ev.d @ P_pi, atol=1e-13)
        assert np.allclose(ev.v, (pi * mdp.r).sum(1) + gamma * P_pi @ ev.v, atol=1e-12)
        assert np.allclose((pi * ev.advantage).sum(1), 0.0, atol=1e-12)


def test_optimal_values_satisfy_bellman_optimality_and_dominate():
    rng = np.random.default_rng(1)
    for gamma in (0.5, 0.9, 0.99):
        mdp = garnet_mdp(12, 4, 3, 3, gamma)
        v, q = optimal_values(mdp)
        assert np.abs(q.max(axis=1) - v).max() <= 1e-10
        assert np.allclose(q, q_values(mdp, v), atol=1e-12)
        for _ in range(5):
            assert np.all(policy_value(mdp, random_policy(rng, 12, 4)) <= v + 1e-12)


def test_soft_optimum_satisfies_soft_bellman_and_dominates():
    rng = np.random.default_rng(2)
    for gamma, tau in ((0.9, 0.1), (0.99, 0.01), (0.9, 1.0)):
        mdp = garnet_mdp(10, 3, 3, 4, gamma)
        v, q, log_pi = soft_optimal(mdp, tau)
        assert np.abs(tau * logsumexp(q / tau) - v).max() <= 1e-11 * max(1.0, np.abs(v).max())
        assert np.allclose(np.exp(log_pi).sum(1), 1.0, atol=1e-15)
        # The softmax-optimal policy attains V_tau*, and no other policy beats it.
        assert np.allclose(evaluate(mdp, np.exp(log_pi), tau, log_pi).v, v, atol=1e-11)
        for _ in range(5):
            assert np.all(policy_value(mdp, random_policy(rng, 10, 3), tau) <= v + 1e-11)


def test_softmax_rows_sum_to_one_even_for_huge_logits():
    """Q/tau reaches thousands for small tau; pi must still sum to 1 to rounding, or 1/(1-gamma)
    amplifies the defect into value errors of 1e-9 (observed before the normaliser was fixed)."""
    logits = np.random.default_rng(9).normal(scale=30.0, size=(200, 5)) / 0.01
    pi, log_pi = softmax_with_log(logits)
    assert np.abs(pi.sum(axis=1) - 1.0).max() <= 1e-15
    assert np.all(np.isfinite(log_pi)) and np.allclose(np.exp(log_pi), pi)


# ------------------------------------------------------------------------------------------------------
# Gradients against finite differences


def test_simplex_gradient_matches_finite_differences():
    mdp = garnet_mdp(5, 3, 3, 0, 0.9)
    pi = random_policy(np.random.default_rng(3), 5, 3)
    analytic = simplex_gradient(mdp, evaluate(mdp, pi))
    numeric = finite_difference(lambda p: mdp.rho @ policy_value(mdp, p), pi)
    assert np.abs(analytic - numeric).max() <= FD_TOL


def test_softmax_gradient_matches_finite_differences():
    mdp = garnet_mdp(5, 3, 3, 1, 0.9)
    theta = np.random.default_rng(4).normal(size=(5, 3))
    pi, log_pi = softmax_with_log(theta)
    analytic = softmax_gradient(mdp, evaluate(mdp, pi, 0.0, log_pi))
    numeric = finite_difference(lambda t: mdp.rho @ policy_value(mdp, softmax_with_log(t)[0]), theta)
    assert np.abs(analytic - numeric).max() <= FD_TOL
    assert np.abs(analytic).max() > 1e-3  # a non-trivial test point


@pytest.mark.parametrize("tau", [0.1, 1.0])
def test_entropy_softmax_gradient_matches_finite_differences(tau):
    mdp = garnet_mdp(5, 3, 3, 2, 0.9)
    theta = np.random.default_rng(5).normal(size=(5, 3))
    pi, log_pi = softmax_with_log(theta)
    analytic = entropy_softmax_gradient(mdp, evaluate(mdp, pi, tau, log_pi))
    numeric = finite_difference(lambda t: mdp.rho @ policy_value(mdp, softmax_with_log(t)[0], tau), theta)
    assert np.abs(analytic - numeric).max() <= FD_TOL
    # The regularised gradient differs from the unregularised one at this point (it is not a no-op).
    assert np.abs(analytic - softmax_gradient(mdp, evaluate(mdp, pi, 0.0, log_pi))).max() > 1e-3


def test_hadamard_gradient_matches_finite_differences_off_the_sphere():
    mdp = garnet_mdp(5, 3, 3, 3, 0.9)
    theta = np.random.default_rng(6).normal(size=(5, 3)) * 1.7  # |theta_s| != 1: checks the 1/|theta_s|^2
    analytic = hadamard_gradient(mdp, theta, evaluate(mdp, hadamard_policy(theta)))
    numeric = finite_difference(lambda t: mdp.rho @ policy_value(mdp, hadamard_policy(t)), theta)
    assert np.abs(analytic - numeric).max() <= FD_TOL
    assert np.allclose((analytic * theta).sum(axis=1), 0.0, atol=1e-12)  # orthogonal to theta_s


# ------------------------------------------------------------------------------------------------------
# Simplex projection


@pytest.mark.parametrize(
    "y, expected",
    [
        ([0.5, 0.5], [0.5, 0.5]),
        ([1.0, 1.0], [0.5, 0.5]),
        ([2.0, 0.0], [1.0, 0.0]),
        ([0.1, 0.2, 0.3], [0.1 + 0.4 / 3, 0.2 + 0.4 / 3, 0.3 + 0.4 / 3]),
        ([-1.0, 0.5, 2.0], [0.0, 0.0, 1.0]),
        ([0.6, 0.6, -5.0], [0.5, 0.5, 0.0]),
        ([0.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]),
        ([3.0], [1.0]),
        ([0.9, 0.3, 0.0], [0.8, 0.2, 0.0]),
    ],
)
def test_project_simplex_hand_cases(y, expected):
    assert np.allclose(project_simplex(np.array([y]))[0], expected, atol=1e-15)


def test_project_simplex_is_the_nearest_point_row_by_row():
    rng = np.random.default_rng(7)
    y = rng.normal(scale=2.0, size=(200, 5))
    x = project_simplex(y)
    assert np.all(x >= 0) and np.allclose(x.sum(axis=1), 1.0, atol=1e-14)
    assert np.allclose(project_simplex(x), x, atol=1e-15)  # idempotent
    others = rng.dirichlet(np.ones(5), size=(200, 50))  # 50 random simplex points per row
    nearest = np.linalg.norm(y - x, axis=1)
    assert np.all(np.linalg.norm(y[:, None, :] - others, axis=2).min(axis=1) >= nearest - 1e-12)


# ------------------------------------------------------------------------------------------------------
# MDP builders


def test_garnet_is_seeded_and_has_the_requested_branching():
    a, b, c = garnet_mdp(10, 4, 3, 7, 0.9), garnet_mdp(10, 4, 3, 7, 0.9), garnet_mdp(10, 4, 3, 8, 0.9)
    assert np.array_equal(a.P, b.P) and np.array_equal(a.r, b.r)
    assert not np.array_equal(a.P, c.P)
    assert np.allclose(a.P.sum(axis=2), 1.0, atol=1e-14) and np.all(a.P >= 0)
    assert np.all((a.P > 0).sum(axis=2) == 3)
    assert np.all((a.r >= 0) & (a.r <= 1)) and np.allclose(a.rho, 0.1)


def test_named_mdps_exist_for_every_configurable_name_and_are_valid():
    assert set(NAMED_MDPS) == set(NamedMDPName.__args__)
    for build in NAMED_MDPS.values():
        mdp = build(0.9)
        assert np.allclose(mdp.P.sum(axis=2), 1.0) and mdp.rho.sum() == pytest.approx(1.0)


def test_chain_short_sighted_action_is_optimal_only_for_small_gamma():
    _, q_far = optimal_values(chain_mdp(0.9))
    _, q_near = optimal_values(chain_mdp(0.5))
    assert np.all(q_far.argmax(axis=1) == 1)  # always advance
    assert list(q_near.argmax(axis=1)) == [0, 0, 1, 1, 1]  # cash in unless the end is near
    _, q = optimal_values(two_state_mdp(0.9))
    assert list(q.argmax(axis=1)) == [1, 0]  # go to state 1, then stay


def test_grid_goal_actions_are_tied_and_all_optimal():
    _, q = optimal_values(grid_mdp(0.9))
    mask = optimal_action_mask(q)
    assert mask[-1].all()  # the absorbing goal: every action optimal
    assert mask[0].sum() == 2  # top-left corner: down and right are equally good
    assert list(np.flatnonzero(mask[0])) == [1, 3]


def test_explicit_mdp_defaults_rho_to_uniform_and_rejects_bad_shapes():
    mdp = explicit_mdp([[[1.0, 0.0]], [[0.0, 1.0]]], [[0.0], [1.0]], 0.5)
    assert np.allclose(mdp.rho, 0.5)
    with pytest.raises(ValueError, match="inconsistent shapes"):
        explicit_mdp([[[1.0, 0.0]], [[0.0, 1.0]]], [[0.0, 1.0]], 0.5)


# ------------------------------------------------------------------------------------------------------
# One step of each update rule, against the seeds-spec formula written out independently


def test_update_rules_match_the_spec_formulas():
    gamma, eta, tau = 0.9, 0.7, 0.05
    mdp = garnet_mdp(6, 4, 3, 5, gamma)
    rng = np.random.default_rng(8)
    theta = rng.normal(size=(6, 4))
    pi, log_pi = softmax_with_log(theta)
    ev, ev_tau = evaluate(mdp, pi, 0.0, log_pi), evaluate(mdp, pi, tau, log_pi)
    d, A = ev.d[:, None], ev.q - ev.v[:, None]
    soft_A = ev_tau.q - tau * log_pi - ev_tau.v[:, None]

    def step(method, params, evaluation, eta=eta, renormalize=True):
        return update(method, mdp, params, evaluation, Hyper(step_size=eta, tau=tau, renormalize=renormalize))

    assert np.allclose(step("projected_pg", pi, ev), project_simplex(pi + eta * d * ev.q / (1 - gamma)))
    assert np.allclose(step("projected_q_ascent", pi, ev), project_simplex(pi + eta * ev.q))
    assert np.allclose(step("softmax_pg", theta, ev), theta + eta * d * pi * A / (1 - gamma))
    assert np.allclose(step("softmax_npg", theta, ev), theta + eta / (1 - gamma) * A)
    assert np.allclose(step("entropy_softmax_pg", theta, ev_tau), theta + eta * d * pi * soft_A / (1 - gamma))
    # Entropy NPG: pi_{k+1} proportional to pi^(1 - alpha) exp(alpha Q_tau / tau), alpha = eta tau / (1 - gamma).
    alpha = eta * tau / (1 - gamma)
    expected = pi ** (1 - alpha) * np.exp(alpha * ev_tau.q / tau)
    expected /= expected.sum(axis=1, keepdims=True)
    assert np.allclose(np.exp(step("entropy_softmax_npg", log_pi, ev_tau)), expected, atol=1e-14)
    soft_pi = np.exp(ev_tau.q / tau) / np.exp(ev_tau.q / tau).sum(axis=1, keepdims=True)
    assert np.allclose(np.exp(step("soft_pi", log_pi, ev_tau)), soft_pi, atol=1e-14)
    # alpha = 1 makes entropy NPG soft policy iteration.
    assert np.allclose(
        step("entropy_softmax_npg", log_pi, ev_tau, eta=(1 - gamma) / tau), step("soft_pi", log_pi, ev_tau)
    )
    # Hadamard: theta + eta * 2 d theta A / ((1 - gamma) |theta_s|^2), optionally back on the sphere.
    h = rng.normal(size=(6, 4))
    ev_h = evaluate(mdp, hadamard_policy(h))
    A_h = ev_h.q - ev_h.v[:, None]
    raw = h + eta * 2 * ev_h.d[:, None] * h * A_h / ((1 - gamma) * (h**2).sum(axis=1, keepdims=True))
    assert np.allclose(step("hadamard_pg", h, ev_h, renormalize=False), raw)
    assert np.allclose(step("hadamard_pg", h, ev_h), raw / np.linalg.norm(raw, axis=1, keepdims=True))


def test_every_method_starts_from_the_uniform_policy():
    for method in PARAMETER_NAME:
        pi, log_pi = policy(method, initial_params(method, 4, 5))
        assert np.allclose(pi, 0.2, atol=1e-15) and np.allclose(log_pi, np.log(0.2)), method
