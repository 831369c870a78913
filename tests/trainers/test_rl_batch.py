"""The RL loss's forward helper: with a zero entropy bonus the entropy may stay out of the autograd graph
(backward skips its vocabulary-wide terms) and the gradients are exactly those of the full graph."""

from __future__ import annotations

import pytest
import torch

from trainers.common.models import load_policy
from trainers.common.rollout_batch import build_batch, logprobs_and_entropy
from trainers.common.tiny import build_tiny_model
from trainers.rl.core import policy_loss

pytestmark = pytest.mark.usefixtures("one_thread")


def test_entropy_outside_the_graph_changes_no_gradient(tmp_path):
    model, tok = load_policy(build_tiny_model(tmp_path / "m", seed=0, hidden=64, layers=2, heads=4))
    model.train()
    g = torch.Generator().manual_seed(0)
    seqs = [(torch.randint(4, 90, (5,), generator=g).tolist(), torch.randint(4, 90, (n,), generator=g).tolist())
            for n in (3, 9, 6, 1)]  # fmt: skip
    batch = build_batch(seqs, tok.pad_token_id)
    adv = torch.tensor([1.0, -0.5, 0.25, -0.75])
    grads, metrics = {}, {}
    for entropy_grad in (True, False):
        model.zero_grad(set_to_none=True)
        logp, ent = logprobs_and_entropy(model, batch, 0.7, entropy_grad=entropy_grad)
        assert ent.requires_grad is entropy_grad
        out = policy_loss(logp, logp.detach() + 0.05, adv, batch.response_mask, entropy=ent, entropy_coef=0.0)
        out.loss.backward()
        grads[entropy_grad] = [p.grad.clone() for p in model.parameters()]
        metrics[entropy_grad] = (out.loss.item(), out.entropy.item())
    assert metrics[True] == metrics[False] and metrics[True][1] > 0
    assert all(torch.equal(a, b) for a, b in zip(grads[True], grads[False], strict=True))
    assert any(a.abs().sum() > 0 for a in grads[True])
