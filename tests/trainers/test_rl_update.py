"""The RL update in token-budget micro-batches equals the un-split update (issue 10, point 2), and gradient
checkpointing changes no gradient (point 3). fp32 on the CPU, a tiny model.

The reference is written independently of the micro-batched path: one forward of the whole mini-batch
through the model's full logits (``logprobs_and_entropy``) and ``policy_loss`` with the aggregation's own
definition (verl's two halves of the mini-batch, each a token mean weighted by its share of sequences)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from trainers.common.models import load_policy
from trainers.common.policy_step import PolicyLogprobs, TorchStepper
from trainers.common.precision import enable_gradient_checkpointing
from trainers.common.rollout_batch import build_batch, logprobs_and_entropy
from trainers.common.tiny import build_tiny_model
from trainers.rl.core import policy_loss
from trainers.rl.update import batch_logprobs, micro_batches, update_minibatch

pytestmark = pytest.mark.usefixtures("one_thread")

TEMPERATURE = 0.8
ENTROPY_COEF = 0.01
KL_COEF = 0.05


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("upd"), seed=0, hidden=64, layers=2, heads=4)


@pytest.fixture(scope="module")
def setup(model_dir):
    """Nine sequences of very different lengths; old and reference log-probs away from the current
    policy, so the ratio is clipped on some tokens and the KL term is not zero."""
    g = torch.Generator().manual_seed(0)
    seqs = [
        (torch.randint(4, 90, (p,), generator=g).tolist(), torch.randint(4, 90, (c,), generator=g).tolist())
        for p, c in ((5, 3), (9, 17), (3, 6), (12, 1), (4, 25), (7, 7), (2, 11), (6, 2), (10, 14))
    ]
    batch = build_batch(seqs, pad_id=0)
    model, _ = load_policy(model_dir)
    with torch.no_grad():
        logp, _ = logprobs_and_entropy(model, batch, TEMPERATURE, with_entropy=False)
    mask = batch.response_mask
    old = (logp + 0.3 * torch.randn(logp.shape, generator=g)) * mask
    ref = (logp + 0.2 * torch.randn(logp.shape, generator=g)) * mask
    advantages = torch.randn(len(seqs), generator=g)
    return batch, advantages, old, ref


def algo(loss_agg: str) -> SimpleNamespace:
    return SimpleNamespace(loss_agg=loss_agg, clip_low=0.2, clip_high=0.28, kl_coef=KL_COEF)


def reference_update(model, batch, rows, advantages, old, ref, loss_agg):
    """Loss and gradients of the mini-batch ``rows`` in one forward over full logits."""
    model.zero_grad(set_to_none=True)
    sub = batch.select(torch.tensor(rows))
    logp, ent = logprobs_and_entropy(model, sub, TEMPERATURE)
    out = policy_loss(
        logp, old[rows], advantages[rows], sub.response_mask, clip_low=0.2, clip_high=0.28, entropy=ent,
        entropy_coef=ENTROPY_COEF, ref_logp=ref[rows], kl_coef=KL_COEF, aggregation=loss_agg,
        micro_batch_seqs=max(1, len(rows) // 2),
    )  # fmt: skip
    out.loss.backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters()}


def split_update(model, batch, rows, advantages, old, ref, loss_agg, budget):
    """The trainer's path: token-budget micro-batches, gradients accumulated by the torch stepper (an
    optimizer with lr 0, so the accumulated .grad is left to compare)."""
    stepper = TorchStepper(model, torch.optim.SGD(model.parameters(), lr=0.0), grad_clip=1e9)
    stats = update_minibatch(
        PolicyLogprobs(model), stepper, batch, rows, advantages, old.clone(), old_from_forward=False,
        ref_logp=ref, algo=algo(loss_agg), temperature=TEMPERATURE, entropy_coef=ENTROPY_COEF, budget=budget,
    )  # fmt: skip
    return stats, {n: p.grad.clone() for n, p in model.named_parameters()}


def assert_same_grads(a: dict, b: dict, rel: float = 1e-5) -> None:
    assert a.keys() == b.keys()
    for name in a:
        scale = b[name].abs().max().clamp(min=1e-12)
        assert (a[name] - b[name]).abs().max() <= rel * scale, name


@pytest.mark.parametrize("loss_agg", ["token_mean_global", "verl_compat"])
def test_micro_batched_update_equals_the_unsplit_update(model_dir, setup, loss_agg):
    batch, advantages, old, ref = setup
    model, _ = load_policy(model_dir)
    model.train()
    rows = [7, 1, 4, 0, 8, 2, 5]  # a mini-batch in permuted order, as PPO's mini-batches are
    budget = 48  # padded tokens per micro-batch: forces several, of different sizes
    groups = micro_batches(batch, rows, budget)
    assert len(groups) >= 4 and sorted(i for g in groups for i in g) == sorted(rows)
    assert max(len(g) for g in groups) > 1  # short rows share a micro-batch

    want, want_grads = reference_update(model, batch, rows, advantages, old, ref, loss_agg)
    stats, grads = split_update(model, batch, rows, advantages, old, ref, loss_agg, budget)
    assert stats["micro_batches"] == len(groups)
    assert stats["loss"] == pytest.approx(want.loss.item(), rel=1e-5)
    for name in ("pg_loss", "entropy", "clipfrac", "approx_kl", "kl_loss"):
        assert stats[name] == pytest.approx(float(getattr(want, name)), rel=1e-5, abs=1e-8), name
    assert want.clipfrac.item() > 0 and want.kl_loss.item() > 0  # the clip and the KL term are exercised
    assert_same_grads(grads, want_grads)
    assert any(g.abs().sum() > 0 for g in grads.values())

    # one micro-batch (a budget above the mini-batch) is the same update too
    _, whole = split_update(model, batch, rows, advantages, old, ref, loss_agg, budget=10**6)
    assert_same_grads(whole, want_grads)


def test_the_aggregations_differ_on_ragged_rows(model_dir, setup):
    """Not vacuous: the two weightings give different losses here, and each split matches its own."""
    batch, advantages, old, ref = setup
    model, _ = load_policy(model_dir)
    rows = list(range(len(batch)))
    a, _ = split_update(model, batch, rows, advantages, old, ref, "token_mean_global", 48)
    b, _ = split_update(model, batch, rows, advantages, old, ref, "verl_compat", 48)
    assert abs(a["loss"] - b["loss"]) > 1e-4


def test_old_log_probs_in_micro_batches_equal_one_forward(model_dir, setup):
    batch, *_ = setup
    model, _ = load_policy(model_dir)
    want, _ = logprobs_and_entropy(model, batch, TEMPERATURE, with_entropy=False)
    got = batch_logprobs(PolicyLogprobs(model), batch, temperature=TEMPERATURE, budget=40)
    mask = batch.response_mask.bool()
    assert torch.allclose(got[mask], want.detach()[mask], atol=1e-5)
    assert (got[~mask] == 0).all()


def test_gradient_checkpointing_gives_the_same_gradients(model_dir, setup):
    batch, advantages, old, ref = setup
    rows = list(range(len(batch)))
    plain, _ = load_policy(model_dir)
    checkpointed, _ = load_policy(model_dir)
    enable_gradient_checkpointing(checkpointed)
    assert checkpointed.model.gradient_checkpointing
    results, calls = [], []
    for model in (plain, checkpointed):
        model.train()
        seen: list[int] = []
        hook = model.model.layers[0].register_forward_pre_hook(lambda *_, seen=seen: seen.append(1))
        try:
            results.append(split_update(model, batch, rows, advantages, old, ref, "token_mean_global", 64))
        finally:
            hook.remove()
        calls.append(len(seen))
    (a, ga), (b, gb) = results
    assert calls[1] == 2 * calls[0] > 0  # checkpointed: every layer is entered again in the backward
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-6)
    assert_same_grads(ga, gb)
