"""The Qwen-style byte-level BPE tokenizer and model builder (no database, CPU, a few seconds)."""

from __future__ import annotations

import hashlib

import pytest

from trainers.common import chat
from trainers.common.bpe_tokenizer import (
    ENDOFTEXT,
    IM_END,
    IM_START,
    QWEN2_CHAT_TEMPLATE,
    build_qwen_style_model,
    build_qwen_style_tokenizer,
)
from trainers.common.models import load_policy, load_tokenizer

TEXT = (
    "Compute 12 + 7 * (3 - 1) / 2 = ?\nSo: 12+7=19 , then  19 . \t Answer: \\boxed{42}\n\n"
    "Héllo wörld, 你好 🙂 -- the  end\r\n"
)
SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."


@pytest.fixture(scope="module")
def tok():
    return build_qwen_style_tokenizer(1024)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_qwen_style_model(
        tmp_path_factory.mktemp("qwen-style"),
        vocab_size=1536,
        hidden_size=32,
        layers=1,
        heads=2,
        kv_heads=1,
        intermediate=64,
        tokenizer_vocab=1024,
    )


def test_template_is_the_qwen25_instruct_one_byte_for_byte():
    # sha256 of the template as decoded from Qwen2.5-Instruct's tokenizer_config.json (see module)
    digest = hashlib.sha256(QWEN2_CHAT_TEMPLATE.encode()).hexdigest()
    assert digest == "cd8e9439f0570856fd70470bf8889ebd8b5d1107207f67a5efb46e342330527f"


def test_tokenizer_has_requested_size_round_trips_and_learned_merges(tok):
    assert len(tok) == 1024
    ids = tok.encode(TEXT)
    assert tok.decode(ids) == TEXT  # byte-level: accents, CJK, emoji, \r, double spaces survive
    assert len(ids) < len(TEXT.encode())  # merges were learned (fewer ids than bytes)
    assert len(tok.encode(" the answer is")) == 3  # common words are single tokens
    # Qwen2's pre-tokenizer: digits one at a time
    assert tok.convert_ids_to_tokens(tok.encode("1234")) == ["1", "2", "3", "4"]


def test_special_tokens_follow_qwen2(tok):
    assert tok.bos_token is None
    assert tok.eos_token == ENDOFTEXT and tok.pad_token == ENDOFTEXT
    specials = tok.convert_tokens_to_ids([ENDOFTEXT, IM_START, IM_END])
    assert specials == [1021, 1022, 1023]  # after the BPE vocabulary, in Qwen2's order
    assert tok.encode(f"{IM_START}user\nhi{IM_END}")[0] == specials[1]
    assert tok.encode(f"{IM_START}user\nhi{IM_END}")[-1] == specials[2]
    assert chat.end_of_turn_ids(tok) == {specials[0], specials[2]}


def test_template_renders_golden_strings(tok):
    assert chat.render_prompt_text(tok, "What is 2+2?") == (
        f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    )
    conversation = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert chat.render_prompt_text(tok, conversation) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    head, answer = chat.sft_ids(tok, "What is 2+2?", "4")
    assert tok.decode(answer) == "4<|im_end|>"  # the assistant turn, cut after <|im_end|>, no BOS
    assert tok.decode(head).endswith("<|im_start|>assistant\n")


def test_saved_model_loads_through_load_tokenizer_without_a_swap(tok, model_dir):
    loaded = load_tokenizer(model_dir)
    # AutoTokenizer resolves a qwen2 directory to Qwen2Tokenizer, which rebuilds the pipeline from
    # vocab and merges: the ids must be the built tokenizer's all the same.
    assert loaded.encode(TEXT) == tok.encode(TEXT)
    assert loaded.decode(loaded.encode(TEXT)) == TEXT
    assert loaded.chat_template == QWEN2_CHAT_TEMPLATE
    assert (loaded.eos_token, loaded.pad_token, loaded.bos_token) == (ENDOFTEXT, ENDOFTEXT, None)
    assert chat.prompt_ids(loaded, "What is 2+2?") == chat.prompt_ids(tok, "What is 2+2?")

    model, _ = load_policy(model_dir)
    assert model.config.vocab_size == 1536 > len(loaded)  # the embedding may exceed the tokenizer
    assert model.config.eos_token_id == loaded.eos_token_id
    assert model.config.tie_word_embeddings


def test_token_offsets_of_split_characters_and_special_tokens(tok):
    """The sample record's per-token offsets (trainers.common.sample_record.token_offsets) on byte-level
    BPE: a character split over byte tokens belongs to the token that completes it, EOS starts at the end,
    and the offsets cut the completion into the tokens' text."""
    from trainers.common.sample_record import token_offsets

    for text in ("The sum 17+25=42, so \\boxed{42}.", "Café × 3 ≤ 10 — 😀 done", "😀😀é"):
        ids = tok.encode(text, add_special_tokens=False) + [tok.eos_token_id]
        offsets = token_offsets(tok, ids, text)
        assert len(offsets) == len(ids) and offsets[0] == 0 and offsets[-1] == len(text)
        assert all(a <= b for a, b in zip(offsets, offsets[1:], strict=False))
        pieces = [text[a:b] for a, b in zip(offsets, offsets[1:] + [len(text)], strict=True)]
        assert "".join(pieces) == text and pieces[-1] == ""  # EOS adds no character
        assert "😀" in pieces or "😀" not in text  # the emoji is one token's, not spread over its bytes
