"""The tiny char tokenizer and model, load_policy, the value model and seeding (no database, CPU)."""

from __future__ import annotations

import importlib.util
import json
import random

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, Qwen2ForCausalLM

from trainers.common.models import (
    VALUE_HEAD_FILE,
    ValueModel,
    load_policy,
    load_tokenizer,
    load_value_model,
    placement_kwargs,
    seed_everything,
)
from trainers.common.tiny import (
    ALPHABET,
    TOKENIZER_MARKER_KEY,
    build_char_tokenizer,
    build_tiny_model,
    is_char_tokenizer_dir,
)

ARITHMETIC = "Compute 12 + 7 * (3 - 1) / 2 = ?\nSo: 12+7=19 , then  19 . \t Answer: \\boxed{42}\n\n"


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """One intra-op thread: these models are tiny, and on a shared 2-core machine a second OpenMP
    thread mostly spin-waits (the suite ran 5x slower under load with 2). Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny"), seed=0)


def test_char_tokenizer_round_trips_arithmetic_text_one_id_per_character():
    tok = build_char_tokenizer()
    ids = tok.encode(ARITHMETIC)
    assert len(ids) == len(ARITHMETIC)  # one id per character, spaces and newlines included
    assert tok.unk_token_id not in ids
    assert tok.decode(ids) == ARITHMETIC
    assert tok.decode(tok.encode(ALPHABET)) == ALPHABET  # every character of the vocabulary
    # Double spaces and " ," survive (clean_up_tokenization_spaces would collapse them).
    assert tok.decode(tok.encode("a  , b .")) == "a  , b ."


def test_char_tokenizer_special_tokens_are_set_and_distinct():
    tok = build_char_tokenizer()
    special = [tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id]
    assert special == [0, 1, 2, 3]
    assert tok.convert_ids_to_tokens(special) == ["<pad>", "<bos>", "<eos>", "<unk>"]
    assert tok.decode([tok.bos_token_id, *tok.encode("7"), tok.eos_token_id], skip_special_tokens=True) == "7"
    assert tok.encode("é") == [tok.unk_token_id]  # outside the alphabet


def test_chat_template_renders_turns_and_generation_prompt():
    tok = build_char_tokenizer()
    chat = [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "\\boxed{2}"}]
    assert tok.apply_chat_template(chat, tokenize=False) == "<bos>user: 1+1?\nassistant: \\boxed{2}<eos>\n"
    prompt = tok.apply_chat_template(chat[:1], tokenize=False, add_generation_prompt=True)
    assert prompt == "<bos>user: 1+1?\nassistant: "
    ids = tok.apply_chat_template(chat[:1], tokenize=True, add_generation_prompt=True, return_dict=False)
    assert ids[0] == tok.bos_token_id and tok.decode(ids[1:]) == "user: 1+1?\nassistant: "


def test_saved_directory_is_marked_and_load_policy_keeps_the_char_tokenizer(tiny_dir):
    config = json.loads((tiny_dir / "tokenizer_config.json").read_text())
    assert config[TOKENIZER_MARKER_KEY] == "char" and is_char_tokenizer_dir(tiny_dir)
    assert (tiny_dir / "model.safetensors").is_file()
    model, tok = load_policy(tiny_dir)
    assert isinstance(model, Qwen2ForCausalLM) and not model.training
    assert tok.decode(tok.encode(ARITHMETIC)) == ARITHMETIC
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    assert model.config.vocab_size == len(tok) == len(build_char_tokenizer())
    assert model.config.tie_word_embeddings and model.lm_head.weight is model.model.embed_tokens.weight
    assert (model.config.hidden_size, model.config.num_hidden_layers, model.config.num_attention_heads) == (
        128,
        4,
        4,
    )
    assert tok.apply_chat_template([{"role": "user", "content": "2*3"}], tokenize=False) == "<bos>user: 2*3\n"


def test_auto_tokenizer_would_have_broken_the_round_trip(tiny_dir):
    """Why load_policy bypasses AutoTokenizer (docs/packaging.md); if transformers fixes this, the
    bypass is harmless, so this only documents the trap."""
    auto = AutoTokenizer.from_pretrained(tiny_dir, local_files_only=True)
    if auto.decode(auto.encode(ARITHMETIC)) == ARITHMETIC:
        pytest.skip("this transformers version loads the char tokenizer correctly through AutoTokenizer")
    assert load_tokenizer(tiny_dir).decode(load_tokenizer(tiny_dir).encode(ARITHMETIC)) == ARITHMETIC


def test_model_save_and_reload_gives_identical_logits(tiny_dir, tmp_path):
    model, tok = load_policy(tiny_dir)
    ids = torch.tensor([tok.encode("What is 6 * 7?\nassistant: ")])
    with torch.no_grad():
        before = model(ids).logits
        model.save_pretrained(tmp_path / "copy")
        tok.save_pretrained(tmp_path / "copy")
        reloaded, _ = load_policy(tmp_path / "copy")
        after = reloaded(ids).logits
    assert before.shape == (1, ids.shape[1], len(tok))
    assert torch.equal(before, after)


def test_models_load_in_the_requested_dtype_straight_onto_their_device(tiny_dir):
    """bf16 weights come out of the checkpoint as bf16 (no fp32 model first); off the CPU the load goes
    through device_map when transformers can use it (it needs accelerate), else one move."""
    model, _ = load_policy(tiny_dir, dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    value = load_value_model(tiny_dir, dtype=torch.bfloat16)
    assert {p.dtype for p in value.backbone.parameters()} == {torch.bfloat16}
    assert value.value_head.weight.dtype == torch.float32  # the head stays fp32 (see ValueModel)
    assert placement_kwargs("cpu") == {}
    has_accelerate = importlib.util.find_spec("accelerate") is not None
    assert placement_kwargs("cuda:0") == (
        {"device_map": {"": torch.device("cuda:0")}} if has_accelerate else {}
    )


@pytest.mark.gpu
def test_a_bf16_policy_loads_onto_the_gpu():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        model, _ = load_policy(build_tiny_model(tmp, seed=0), dtype=torch.bfloat16, device="cuda")
    assert {(p.device.type, p.dtype) for p in model.parameters()} == {("cuda", torch.bfloat16)}


def test_build_is_deterministic_per_seed_and_leaves_global_rng_alone(tmp_path):
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a, _ = load_policy(build_tiny_model(tmp_path / "a", seed=5))
    assert torch.equal(torch.rand(1), expected_next)  # the global RNG stream was not consumed
    b, _ = load_policy(build_tiny_model(tmp_path / "b", seed=5))
    c, _ = load_policy(build_tiny_model(tmp_path / "c", seed=6))
    wa, wb, wc = (m.model.layers[0].mlp.up_proj.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_value_model_forward_shapes_and_padding(tiny_dir):
    value = load_value_model(tiny_dir)
    assert isinstance(value, ValueModel) and value.value_head.in_features == 128
    ids = torch.randint(4, 100, (3, 9))
    out = value(ids)
    assert out.shape == (3, 9) and out.dtype == torch.float32 and torch.isfinite(out).all()
    # Left padding: the values of the real tokens do not depend on the padding in front of them.
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, :3] = 0
    padded = torch.stack([ids[0], torch.cat([torch.zeros(3, dtype=torch.long), ids[0, :6]])])
    with torch.no_grad():
        vals = value(padded, attention_mask=mask)
        alone = value(ids[:1, :6])
    assert torch.allclose(vals[1, 3:], alone[0], atol=1e-5)
    # Gradients reach both the head and the backbone.
    value(ids).sum().backward()
    assert value.value_head.weight.grad is not None
    assert value.backbone.layers[0].mlp.up_proj.weight.grad.abs().sum() > 0


def test_value_model_starts_from_the_policy_backbone(tiny_dir):
    policy, _ = load_policy(tiny_dir)
    value = load_value_model(tiny_dir)
    assert torch.equal(value.backbone.embed_tokens.weight, policy.model.embed_tokens.weight)
    assert torch.equal(
        value.backbone.layers[3].self_attn.q_proj.weight, policy.model.layers[3].self_attn.q_proj.weight
    )


def test_value_head_save_and_load_round_trip(tiny_dir, tmp_path):
    value = load_value_model(tiny_dir)
    with torch.no_grad():
        value.value_head.weight.normal_()
        value.value_head.bias.fill_(0.5)
        value.backbone.norm.weight.mul_(1.5)  # the backbone is saved too, not re-read from the policy
    ids = torch.randint(4, 100, (2, 7))
    with torch.no_grad():
        before = value(ids)
    value.save_pretrained(tmp_path / "critic")
    assert (tmp_path / "critic" / VALUE_HEAD_FILE).is_file()
    restored = load_value_model(tmp_path / "critic")
    with torch.no_grad():
        after = restored(ids)
    assert torch.equal(restored.value_head.bias, torch.tensor([0.5]))
    assert torch.allclose(before, after, atol=1e-6)
    fresh = load_value_model(tiny_dir)  # a policy directory: a new head, not the saved one
    with torch.no_grad():
        assert not torch.allclose(fresh(ids), after, atol=1e-3)


def test_seed_everything_replays_python_numpy_and_torch():
    seed_everything(7)
    first = (random.random(), np.random.rand(), torch.rand(2))
    seed_everything(7)
    second = (random.random(), np.random.rand(), torch.rand(2))
    assert first[0] == second[0] and first[1] == second[1] and torch.equal(first[2], second[2])
    seed_everything(8)
    assert random.random() != first[0]
