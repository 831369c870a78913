"""GRPO/MAGIC core functions against hand-computed cases (seeds-spec sections 1.1, 1.2, 6)."""

import math

import pytest
import torch

from trainers.eval.core import pass_at_k
from trainers.rl.core import (
    EntropyController,
    group_advantages,
    informative_groups,
    policy_loss,
    token_entropy,
)


def test_group_advantage_uses_unbiased_std_plus_eps():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0])
    groups = torch.tensor([0, 0, 0, 0, 1, 1])
    adv = group_advantages(rewards, groups, eps=1e-6)
    # group 0: mean 0.25, unbiased std = sqrt(((0.75^2) + 3 * 0.25^2) / 3) = 0.5
    assert adv[0].item() == pytest.approx(0.75 / (0.5 + 1e-6), rel=1e-6)
    assert adv[1].item() == pytest.approx(-0.25 / (0.5 + 1e-6), rel=1e-6)
    assert adv[4].item() == 0.0 and adv[5].item() == 0.0  # all-correct group: no signal


def test_singleton_group_has_mean_zero_and_std_one():
    adv = group_advantages(torch.tensor([1.0, 0.3]), torch.tensor([7, 8]), eps=1e-6)
    assert adv.tolist() == pytest.approx([1.0 / (1 + 1e-6), 0.3 / (1 + 1e-6)], rel=1e-6)


def test_rejection_drops_all_zero_and_all_one_groups():
    rewards = torch.tensor([0.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    groups = torch.tensor([0, 0, 1, 1, 2, 2])
    assert informative_groups(rewards, groups).tolist() == [False, False, False, False, True, True]


def test_ppo_clip_loss_hand_case():
    # one sequence of two tokens, advantage +1; ratios e^0.5 (clipped to 1.2) and e^-0.1 (unclipped)
    old = torch.zeros(1, 2)
    logp = torch.tensor([[0.5, -0.1]])
    out = policy_loss(logp, old, torch.tensor([1.0]), torch.ones(1, 2), clip_low=0.2, clip_high=0.2)
    expected = (-1.2 + -math.exp(-0.1)) / 2
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    assert out.clipfrac.item() == pytest.approx(0.5)
    assert out.approx_kl.item() == pytest.approx((-0.5 + 0.1) / 2)


def test_negative_advantage_clips_from_below():
    out = policy_loss(torch.tensor([[-0.5]]), torch.zeros(1, 1), torch.tensor([-1.0]), torch.ones(1, 1))
    # -A * ratio = e^-0.5 = 0.607; -A * clip = 0.8: the max (pessimistic) is 0.8
    assert out.loss.item() == pytest.approx(0.8)


def test_mask_excludes_padding_and_entropy_bonus_lowers_the_loss():
    logp = torch.zeros(2, 3)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    adv = torch.tensor([1.0, -1.0])
    ent = torch.full((2, 3), 2.0)
    base = policy_loss(logp, logp, adv, mask)
    bonus = policy_loss(logp, logp, adv, mask, entropy=ent, entropy_coef=0.01)
    # token mean over 3 real tokens: (-1 -1 +1)/3
    assert base.loss.item() == pytest.approx(-1 / 3)
    assert bonus.loss.item() == pytest.approx(-1 / 3 - 0.02)


def test_aggregations_agree_with_equal_token_counts_and_differ_otherwise():
    torch.manual_seed(0)
    logp, old = torch.randn(4, 5), torch.randn(4, 5)
    adv = torch.randn(4)
    full = torch.ones(4, 5)
    a = policy_loss(logp, old, adv, full).loss
    b = policy_loss(logp, old, adv, full, aggregation="verl_compat", micro_batch_seqs=2).loss
    assert a.item() == pytest.approx(b.item(), rel=1e-6)
    ragged = torch.tensor([[1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1]])
    c = policy_loss(logp, old, adv, ragged).loss
    d = policy_loss(logp, old, adv, ragged, aggregation="verl_compat", micro_batch_seqs=2).loss
    assert abs(c.item() - d.item()) > 1e-4


def test_token_entropy_of_uniform_logits_is_log_vocab():
    assert token_entropy(torch.zeros(3, 10)).tolist() == pytest.approx([math.log(10)] * 3)


def test_entropy_controller_rises_to_the_cap_in_fifty_steps_then_switches_off():
    c = EntropyController()
    for _ in range(49):
        c = c.update(0.1)
    assert c.value == pytest.approx(4.9e-3) and c.enabled
    c = c.update(0.1)
    assert c.value == pytest.approx(5e-3)
    c = c.update(0.1)
    assert c.value == pytest.approx(5e-3)  # clipped at the cap
    c = c.update(0.3)  # above target: bonus off at once, value decays by delta
    assert c.coef == 0.0 and c.value == pytest.approx(4.9e-3)
    for _ in range(100):
        c = c.update(0.3)
    assert c.value == 0.0  # clipped at the floor


def test_entropy_controller_lags_one_step_and_round_trips():
    c = EntropyController()
    assert c.coef == 0.0  # step 0 uses the initial state
    c = c.update(0.05)
    assert c.coef == pytest.approx(1e-4)  # used at the next step
    assert EntropyController.from_state(c.state_dict()) == c


@pytest.mark.parametrize("n,c,k,expected", [(4, 0, 1, 0.0), (4, 4, 2, 1.0), (4, 1, 1, 0.25), (4, 1, 2, 0.5)])
def test_pass_at_k(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_matches_the_combinatorial_formula():
    n, c, k = 32, 5, 8
    assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k))
