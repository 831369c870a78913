"""SFT on the CPU with a small random model: examples are chat-rendered with the assistant turn as the
only labels, a batch split into token-budget micro-batches gives the un-split update, bf16 autocast and
gradient checkpointing train, and a bf16 checkpoint (bf16 weights + fp32 master weights in
optimizer.pt) resumes exactly."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

from trainers.base import MemorySink, get_spec
from trainers.common import chat
from trainers.common.arith import disjoint_splits
from trainers.common.models import load_policy
from trainers.common.precision import enable_gradient_checkpointing, resolve_precision
from trainers.common.tiny import build_tiny_model
from trainers.sft.data import Example
from trainers.sft.train import accumulate_gradients, encode_example

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("small"), seed=0, hidden=64, layers=2, heads=4)


@pytest.fixture(scope="module")
def examples():
    problems, _ = disjoint_splits(12, 1, seed=3)
    return [Example(p.prompt, str(p.answer), p.solution) for p in problems]


def test_an_example_is_the_rendered_prompt_then_the_assistant_turn(small_model, examples):
    _, tok = load_policy(small_model)
    ex = examples[0]
    ids, labels = encode_example(tok, ex, max_length=512)
    prompt = chat.prompt_ids(tok, ex.prompt, "auto")
    assert tok.decode(prompt) == f"<bos>user: {ex.prompt}\nassistant: "  # the tiny template
    assert ids[: len(prompt)] == prompt and labels[: len(prompt)] == [-100] * len(prompt)
    answer = labels[len(prompt) :]
    assert answer == ids[len(prompt) :] and -100 not in answer
    assert tok.decode(answer) == ex.solution + "<eos>"  # no BOS before the solution, EOS ends the turn
    assert ids.count(tok.bos_token_id) == 1
    # without a template: the raw prompt, then the solution and EOS
    raw_ids, raw_labels = encode_example(tok, ex, max_length=512, mode="none")
    assert tok.decode(raw_ids) == ex.prompt + ex.solution + "<eos>"
    assert tok.decode([t for t in raw_labels if t != -100]) == ex.solution + "<eos>"
    cut_ids, cut_labels = encode_example(tok, ex, max_length=len(prompt) + 3)
    assert len(cut_ids) == len(cut_labels) == len(prompt) + 3


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def test_micro_batches_give_the_unsplit_loss_and_gradients(small_model, examples):
    model, tok = load_policy(small_model)
    model.train()
    encoded = [encode_example(tok, ex, 512) for ex in examples]
    precision = resolve_precision("float32", "torch", torch.device("cpu"))
    whole = accumulate_gradients(
        model, encoded, tok.pad_token_id, micro_batch_tokens=10**6, precision=precision
    )
    full = _grads(model)
    model.zero_grad(set_to_none=True)
    longest = max(len(ids) for ids, _ in encoded)
    split = accumulate_gradients(
        model, encoded, tok.pad_token_id, micro_batch_tokens=2 * longest, precision=precision
    )
    parts = _grads(model)
    assert whole.micro_batches == 1 and split.micro_batches >= 4
    assert split.loss == pytest.approx(whole.loss, rel=1e-5)
    assert split.token_accuracy == whole.token_accuracy and split.tokens == whole.tokens
    assert set(parts) == set(full) == {n for n, _ in model.named_parameters()}
    for name, g in full.items():
        assert torch.linalg.vector_norm(parts[name] - g) <= 1e-5 * torch.linalg.vector_norm(g), name
    # gradient checkpointing recomputes the same activations: the same gradients, micro-batched too
    enable_gradient_checkpointing(model)
    model.zero_grad(set_to_none=True)
    accumulate_gradients(
        model, encoded, tok.pad_token_id, micro_batch_tokens=2 * longest, precision=precision
    )
    for name, g in _grads(model).items():
        assert torch.linalg.vector_norm(g - full[name]) <= 1e-5 * torch.linalg.vector_norm(full[name]), name
    # the loss is the token mean of the cross-entropy over the labelled tokens, as the full logits say
    ids, labels = (
        torch.nn.utils.rnn.pad_sequence([torch.tensor(x) for x in xs], batch_first=True, padding_value=pad)
        for xs, pad in (([e[0] for e in encoded], tok.pad_token_id), ([e[1] for e in encoded], -100))
    )
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=ids != tok.pad_token_id).logits
    reference = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten())
    assert whole.loss == pytest.approx(float(reference), rel=1e-5)


def sft_config(model_dir, **over):
    base = {"model_path": str(model_dir), "steps": 4, "warmup_steps": 1, "batch_size": 8, "eval_every": 0,
            "generated_train": 64, "generated_eval": 4, "max_new_tokens": 8, "lr": 2e-3, "seed": 1}  # fmt: skip
    return get_spec("sft").validate({**base, **over})


def test_bf16_with_gradient_checkpointing_and_micro_batches_trains_and_saves_bf16(small_model, tmp_path):
    fp32, bf16 = MemorySink(workdir=tmp_path / "a"), MemorySink(workdir=tmp_path / "b")
    train = get_spec("sft").train_fn()
    train(sft_config(small_model), fp32)
    train(
        sft_config(small_model, dtype="bfloat16", gradient_checkpointing=True, micro_batch_tokens=200), bf16
    )
    a, b = fp32.series("train/loss"), bf16.series("train/loss")
    assert all(math.isfinite(x) for x in b) and b == pytest.approx(a, rel=0.05) and b != a
    assert min(bf16.series("train/micro_batches")) >= 2 and set(fp32.series("train/micro_batches")) == {1.0}
    assert "memory/peak_gb" not in bf16.metrics  # CUDA only
    directory = bf16.checkpoints[-1][1]
    assert {t.dtype for t in load_file(str(directory / "model.safetensors")).values()} == {torch.bfloat16}
    assert {t.dtype for t in load_file(str(fp32.checkpoints[-1][1] / "model.safetensors")).values()} == {
        torch.float32
    }


def test_a_bf16_checkpoint_resumes_exactly_and_the_optimizer_is_optional(small_model, tmp_path):
    train = get_spec("sft").train_fn()
    cfg = sft_config(small_model, dtype="bfloat16", checkpoint_every=2)
    full = MemorySink(workdir=tmp_path / "full")
    train(cfg, full)
    assert [c[0] for c in full.checkpoints] == [1, 3]
    resumed = MemorySink(workdir=tmp_path / "resumed", resume_from=full.checkpoints[0][1])
    train(cfg, resumed)
    assert sorted(resumed.metrics["train/loss"]) == [3, 4]
    for step in (3, 4):
        assert resumed.metrics["train/loss"][step] == pytest.approx(
            full.metrics["train/loss"][step], rel=1e-6
        )
    lean = MemorySink(workdir=tmp_path / "lean")
    train(sft_config(small_model, save_optimizer=False, steps=1, warmup_steps=0), lean)
    files = {p.name for p in lean.checkpoints[-1][1].iterdir()}
    assert "optimizer.pt" not in files and {"trainer_state.json", "model.safetensors"} <= files
