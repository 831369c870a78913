"""token_logprobs' chunked LM head (hand-written backward) against full logits (CPU, a few seconds)."""

from __future__ import annotations

import pytest
import torch

from trainers.common.tiny import build_tiny_model
from trainers.common.token_batching import token_logprobs

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from trainers.common.models import load_policy

    model, _ = load_policy(build_tiny_model(tmp_path_factory.mktemp("tiny"), seed=3, hidden=32, layers=2))
    return model.train()


def _batch(vocab: int):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, vocab, (3, 12), generator=g)
    attn = torch.ones_like(ids)
    attn[2, 9:] = 0  # a right-padded row
    resp = torch.zeros(3, 11)
    resp[0, 4:] = 1
    resp[1, 2:9] = 1
    resp[2, 5:8] = 1
    return ids, attn, resp


def _reference(model, ids, attn, resp, temperature):
    logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1].float() / temperature
    logp_all = torch.log_softmax(logits, -1)
    logp = logp_all.gather(-1, ids[:, 1:, None]).squeeze(-1) * resp
    entropy = -(logp_all.exp() * logp_all).sum(-1) * resp
    return logp, entropy


def _grads(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("entropy_grad", [False, True])
def test_values_and_gradients_equal_full_logits(model, entropy_grad):
    ids, attn, resp = _batch(model.config.vocab_size)
    t = 0.7
    weights = torch.linspace(0.5, 1.5, resp.numel()).view_as(resp)  # distinct per-token gradients
    ref_lp, ref_ent = _reference(model, ids, attn, resp, t)
    ref = _grads(model, (ref_lp * weights).sum() + ((ref_ent * weights).sum() if entropy_grad else 0))
    lp, ent = token_logprobs(model, ids, attn, resp, temperature=t, entropy_grad=entropy_grad, chunk_rows=4)
    assert lp.shape == resp.shape and ent.shape == resp.shape
    torch.testing.assert_close(lp, ref_lp, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ent, ref_ent, rtol=1e-5, atol=1e-5)
    assert ent.requires_grad == entropy_grad
    got = _grads(model, (lp * weights).sum() + ((ent * weights).sum() if entropy_grad else 0))
    assert got.keys() == ref.keys()
    for name in ref:  # the tied embedding gets both its input and its LM-head gradient
        error = (got[name] - ref[name]).abs().max() / ref[name].abs().max()
        assert error < 1e-5, f"{name}: relative error {error:.2e}"


def test_bf16_autocast_is_close_to_fp32(model):
    ids, attn, resp = _batch(model.config.vocab_size)
    lp32, _ = token_logprobs(model, ids, attn, resp, with_entropy=False)
    g32 = _grads(model, lp32.sum())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lp16, _ = token_logprobs(model, ids, attn, resp, with_entropy=False, chunk_rows=5)
    assert lp16.dtype == torch.float32
    g16 = _grads(model, lp16.sum())
    torch.testing.assert_close(lp16, lp32, rtol=0.05, atol=0.05)
    for name, grad in g32.items():
        assert g16[name].dtype == torch.float32  # fp32 master weights get fp32 gradients
        assert torch.nn.functional.cosine_similarity(g16[name].flatten(), grad.flatten(), dim=0) > 0.98
