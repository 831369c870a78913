"""trainers.common.checkpoints: a model saved in the training dtype without touching the live fp32
weights, loadable as it is; optimizer state (and fp32 master weights) in optimizer.pt read back with
weights_only; the trainer state as plain JSON."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from trainers.base import MemorySink
from trainers.common.checkpoints import (
    OPTIMIZER_FILE,
    load_optimizer_state,
    read_trainer_state,
    save_optimizer_state,
    save_policy,
    write_trainer_state,
)
from trainers.common.models import load_policy
from trainers.common.tiny import build_tiny_model, is_char_tokenizer_dir


@pytest.fixture
def model_dir(tmp_path):
    return build_tiny_model(tmp_path / "m", seed=0, hidden=32, layers=1, heads=2)


def test_save_policy_in_bf16_leaves_the_live_weights_fp32_and_loads_back(model_dir, tmp_path):
    model, tok = load_policy(model_dir)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    directory = save_policy(MemorySink(workdir=tmp_path), 7, model, tok, True, dtype=torch.bfloat16)
    assert directory.name == "checkpoint-00000007" and is_char_tokenizer_dir(directory)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    saved = load_file(str(directory / "model.safetensors"))
    assert {t.dtype for t in saved.values()} == {torch.bfloat16}
    assert "lm_head.weight" not in saved  # the tied head is stored once, as save_pretrained does
    assert json.loads((directory / "config.json").read_text())["dtype"] == "bfloat16"
    loaded, _ = load_policy(directory, dtype=torch.bfloat16)
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, before[name].to(torch.bfloat16)), name
    fp32_dir = save_policy(MemorySink(workdir=tmp_path / "b"), 1, model, tok, False)
    assert {t.dtype for t in load_file(str(fp32_dir / "model.safetensors")).values()} == {torch.float32}


def test_optimizer_state_and_master_weights_round_trip(model_dir, tmp_path):
    model, _ = load_policy(model_dir)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(input_ids=torch.tensor([[5, 6, 7]])).logits.sum().backward()
    opt.step()
    assert load_optimizer_state(tmp_path) is None  # a checkpoint saved without it
    save_optimizer_state(tmp_path, opt, master=model, extra={"rng": torch.get_rng_state(), "note": 3})
    # a plain torch.load refusing pickled objects reads it
    assert set(torch.load(tmp_path / OPTIMIZER_FILE, weights_only=True)) == {
        "optimizer", "master_weights", "rng", "note"
    }  # fmt: skip
    fresh, _ = load_policy(model_dir)
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=1e-2)
    state = load_optimizer_state(tmp_path, fresh_opt, master=fresh)
    assert state["note"] == 3
    for (name, a), b in zip(model.named_parameters(), fresh.parameters(), strict=True):
        assert torch.equal(a, b), name
        assert torch.equal(opt.state[a]["exp_avg"], fresh_opt.state[b]["exp_avg"]), name


def test_trainer_state_is_plain_json(tmp_path):
    assert read_trainer_state(tmp_path) is None
    write_trainer_state(tmp_path, {"kind": "sft", "step": 4})
    assert json.loads((tmp_path / "trainer_state.json").read_text()) == {"kind": "sft", "step": 4}
    assert read_trainer_state(tmp_path) == {"kind": "sft", "step": 4}
