"""Reading exported preference rows, rendering them (chat template or plain), exactly one BOS, and
left truncation with its bookkeeping (trainers.common.data)."""

from __future__ import annotations

import json

import pytest
import torch
from tokenizers.processors import TemplateProcessing

from trainers.common.data import (
    DataError,
    PreferenceEncoder,
    length_stats,
    pad_batch,
    read_preference_jsonl,
    row_from_mapping,
)
from trainers.common.tiny import build_char_tokenizer

ROW = {"id": "r1", "prompt": "1+1?", "chosen": "2", "rejected": "3", "source": "math-prm"}
CONVERSATION_ROW = {
    "id": "r2",
    "prompt": "ignored when the sides are conversations",
    "chosen": [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"}],
    "rejected": [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "3"}],
}


def decode(tok, ids):
    return tok.decode(ids, skip_special_tokens=False)


def test_a_string_pair_is_rendered_with_the_chat_template_and_one_bos():
    tok = build_char_tokenizer()
    enc = PreferenceEncoder(tok, max_length=64).encode([row_from_mapping(ROW)])
    assert decode(tok, enc.chosen[0]) == "<bos>user: 1+1?\nassistant: 2<eos>\n"
    assert decode(tok, enc.rejected[0]) == "<bos>user: 1+1?\nassistant: 3<eos>\n"
    assert enc.chosen[0].count(tok.bos_token_id) == 1 and enc.chosen[0][0] == tok.bos_token_id
    assert enc.ids == ["r1"] and enc.sources == ["math-prm"]


def test_a_conversation_renders_like_the_same_string_pair():
    tok = build_char_tokenizer()
    encoder = PreferenceEncoder(tok, max_length=64)
    conv, plain = encoder.encode([row_from_mapping(CONVERSATION_ROW), row_from_mapping(ROW)]).chosen
    assert conv == plain


def test_without_a_template_the_text_is_prompt_blank_line_response():
    tok = build_char_tokenizer()
    tok.chat_template = None
    enc = PreferenceEncoder(tok, max_length=64).encode(
        [row_from_mapping(ROW), row_from_mapping({**ROW, "prompt": ""})]
    )
    assert decode(tok, enc.chosen[0]) == "1+1?\n\n2"
    assert decode(tok, enc.chosen[1]) == "2"  # no prompt: the response alone


def test_a_tokenizer_that_adds_bos_and_a_template_that_writes_it_give_one_bos():
    tok = build_char_tokenizer()
    # Like Llama-3 / Gemma: the tokenizer itself prepends BOS on encode, and the template writes one too.
    tok._tokenizer.post_processor = TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", tok.bos_token_id)]
    )
    assert tok("a")["input_ids"][0] == tok.bos_token_id
    encoder = PreferenceEncoder(tok, max_length=64)
    ids = encoder.encode([row_from_mapping(ROW)]).chosen[0]
    assert ids[:2] == [tok.bos_token_id, tok("u", add_special_tokens=False)["input_ids"][0]]
    assert ids.count(tok.bos_token_id) == 1
    tok.chat_template = None  # plain text: the tokenizer's BOS, once
    plain = PreferenceEncoder(tok, max_length=64).encode([row_from_mapping(ROW)]).chosen[0]
    assert decode(tok, plain) == "<bos>1+1?\n\n2"


def test_long_prompts_are_cut_from_the_left_keeping_bos_and_the_response_end():
    tok = build_char_tokenizer()
    long_prompt = "x" * 40 + " what is 1+1?"
    rows = [
        row_from_mapping({"id": "long", "prompt": long_prompt, "chosen": "2", "rejected": "two, surely"}),
        row_from_mapping({"id": "short", "prompt": "1+1?", "chosen": "2", "rejected": "3"}),
        row_from_mapping({"id": "long-answer", "prompt": "1+1?", "chosen": "2", "rejected": "9" * 40}),
    ]
    enc = PreferenceEncoder(tok, max_length=28).encode(rows)  # "short" takes 26
    chosen = decode(tok, enc.chosen[0])
    assert len(enc.chosen[0]) == 28 and len(enc.rejected[0]) == 28
    assert chosen.startswith("<bos>") and chosen.endswith("1+1?\nassistant: 2<eos>\n")
    assert decode(tok, enc.rejected[0]) == "<bos>1?\nassistant: two, surely<eos>\n"  # 1 + 27 tokens
    full = len("user: " + long_prompt + "\nassistant: 2\n") + 2  # one token per character, + <bos> and <eos>
    assert enc.chosen_full_len[0] == full
    assert enc.truncated == [True, False, True]
    assert enc.response_truncated == [False, False, True]  # 40 nines do not fit in 28 tokens
    assert decode(tok, enc.rejected[2]).endswith("9999<eos>\n")
    stats = length_stats(enc)
    assert stats["truncated_ratio"] == pytest.approx(2 / 3)
    assert stats["response_truncated_ratio"] == pytest.approx(1 / 3)
    assert stats["chosen_len_mean"] == pytest.approx((28 + 26 + 26) / 3)
    assert length_stats(enc, [1])["truncated_ratio"] == 0.0


def test_read_preference_jsonl_reads_rows_and_names_the_bad_line(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(
        json.dumps(ROW)
        + "\n\n"
        + json.dumps(CONVERSATION_ROW)
        + "\n"
        + json.dumps({"chosen": "a", "rejected": "b"})
        + "\n"
    )
    rows = read_preference_jsonl(path)
    assert [r.id for r in rows] == ["r1", "r2", "2"] and rows[0].source == "math-prm" and rows[2].source == ""
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(ROW) + "\n" + json.dumps({**ROW, "rejected": 3}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl:2: 'rejected' must be a string"):
        read_preference_jsonl(bad)
    ends_with_user = {**CONVERSATION_ROW, "chosen": CONVERSATION_ROW["chosen"][:1]}
    bad.write_text(json.dumps(ends_with_user) + "\n")
    with pytest.raises(DataError, match="must end with the assistant's response"):
        read_preference_jsonl(bad)
    bad.write_text("\n")
    with pytest.raises(DataError, match="no preference pairs"):
        read_preference_jsonl(bad)


def test_pad_batch_pads_on_either_side():
    ids, mask = pad_batch([[5, 6, 7], [8]], pad_id=0, side="right")
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    ids, mask = pad_batch([[5, 6, 7], [8]], pad_id=0, side="left")
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert ids.dtype == torch.long
