"""Golden tests of trainers/common/chat.py on the tokenizer family real policies use: a byte-level BPE
with Qwen2's pipeline, special tokens (no BOS) and the Qwen2.5-Instruct chat template
(trainers/common/bpe_tokenizer.py), and a BOS-adding variant of it for the double-BOS rule.

The golden ids belong to ``build_qwen_style_tokenizer(1024)`` (merges learned from the generated
corpus; specials 1021-1023): a change of the builder or of the tokenizers library that moves them
shows up here. No database, CPU, a few seconds."""

from __future__ import annotations

import copy

import pytest
from tokenizers import Tokenizer, processors
from transformers import PreTrainedTokenizerFast

from trainers.common import chat
from trainers.common.bpe_tokenizer import ENDOFTEXT, IM_END, IM_START, build_qwen_style_tokenizer
from trainers.sft.data import Example
from trainers.sft.train import IGNORE, encode_example

DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
EOT, START, END = 1021, 1022, 1023  # <|endoftext|>, <|im_start|>, <|im_end|>
QUESTION = "What is 2+2?"

#: <|im_start|>system\nYou are Qwen, ... assistant.<|im_end|>\n (the template's default system turn)
SYSTEM_TURN_IDS = [
    START, 82, 571, 198, 56, 258, 545, 220, 48, 86, 347, 11, 615, 512, 220, 32, 796, 65, 64, 65, 64,
    220, 34, 538, 13, 220, 56, 258, 545, 356, 607, 644, 13, END, 198,
]  # fmt: skip
#: <|im_start|>user\nWhat is 2+2?<|im_end|>\n
USER_TURN_IDS = [START, 324, 271, 198, 712, 318, 291, 220, 17, 10, 17, 30, END, 198]
#: <|im_start|>assistant\n (the generation prompt)
GENERATION_PROMPT_IDS = [START, 316, 556, 198]

#: A custom template (a config's ``chat_template`` set to a Jinja string).
BRACKETS = (
    "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}[assistant] {% endif %}"
)


@pytest.fixture(scope="module")
def qwen():
    return build_qwen_style_tokenizer(1024)


@pytest.fixture(scope="module")
def bos_qwen(qwen):
    """The same BPE with a Llama-style BOS: ``<s>`` added by the tokenizer on every encode (its
    post-processor) and written by its template too, the setup that yields two BOS if rendered text
    is encoded naively."""
    backend = Tokenizer.from_str(qwen.backend_tokenizer.to_str())
    backend.add_special_tokens(["<s>"])
    bos = backend.token_to_id("<s>")
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token=IM_END, pad_token=ENDOFTEXT
    )
    tok.chat_template = (
        "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    return tok


def test_a_string_prompt_is_one_user_turn_under_the_default_system_message(qwen):
    text = chat.render_prompt_text(qwen, QUESTION)
    assert text == (
        f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n"
        f"<|im_start|>user\n{QUESTION}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    ids = chat.prompt_ids(qwen, QUESTION)
    assert ids == SYSTEM_TURN_IDS + USER_TURN_IDS + GENERATION_PROMPT_IDS
    assert qwen.decode(ids) == text  # the ids are the text, nothing added, nothing lost
    assert chat.render_prompts(qwen, [QUESTION, QUESTION]) == [ids, ids]


def test_a_conversation_row_is_used_as_it_is(qwen):
    conversation = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "12+30=?"}]
    text = chat.render_prompt_text(qwen, conversation)
    # its own system message replaces the default one; the assistant turn is opened
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n12+30=?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert chat.prompt_ids(qwen, conversation) == [
        START, 82, 571, 198, 768, 302, 456, 448, 13, END, 198,
        START, 324, 271, 198, 16, 17, 10, 18, 15, 28, 30, END, 198,
        *GENERATION_PROMPT_IDS,
    ]  # fmt: skip
    # earlier turns, the model's own included, are kept verbatim
    turns = [
        {"role": "user", "content": "1+1?"},
        {"role": "assistant", "content": "2"},
        {"role": "user", "content": "And 2+2?"},
    ]
    assert chat.render_prompt_text(qwen, turns) == (
        f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n<|im_start|>user\n1+1?<|im_end|>\n"
        "<|im_start|>assistant\n2<|im_end|>\n<|im_start|>user\nAnd 2+2?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_none_mode_reads_the_raw_text(qwen):
    assert chat.render_prompt_text(qwen, QUESTION, "none") == QUESTION
    assert chat.prompt_ids(qwen, QUESTION, "none") == [712, 318, 291, 220, 17, 10, 17, 30]
    turns = [{"role": "user", "content": "1+1?"}, {"role": "user", "content": "And 2+2?"}]
    assert chat.render_prompt_text(qwen, turns, "none") == "1+1?\n\nAnd 2+2?"
    # SFT without a template: the solution then EOS
    head, answer = chat.sft_ids(qwen, QUESTION, "4", "none")
    assert head == [712, 318, 291, 220, 17, 10, 17, 30] and answer == [19, EOT]


def test_a_custom_template_string_replaces_the_tokenizers_own(qwen):
    text = chat.render_prompt_text(qwen, QUESTION, BRACKETS)
    assert text == "[user] What is 2+2?\n[assistant] "
    ids = chat.prompt_ids(qwen, QUESTION, BRACKETS)
    assert ids == [58, 324, 271, 60, 220, 712, 318, 291, 220, 17, 10, 17, 430, 58, 316, 556, 60, 220]
    assert START not in ids
    # SFT: what the template writes after "[assistant] " ("4\n"); it has no end-of-turn token, so EOS
    head, answer = chat.sft_ids(qwen, QUESTION, "4", BRACKETS)
    assert head == ids and answer == [19, 198, EOT]


def test_a_template_that_fails_to_render_is_a_chat_template_error(qwen):
    broken = "{{ messages[0]['content'] | no_such_filter }}"
    with pytest.raises(chat.ChatTemplateError, match="could not render"):
        chat.prompt_ids(qwen, QUESTION, broken)
    with pytest.raises(chat.ChatTemplateError, match="could not render"):
        chat.sft_ids(qwen, QUESTION, "4", broken)


def test_never_a_double_bos(bos_qwen):
    bos = bos_qwen.bos_token_id
    text = chat.render_prompt_text(bos_qwen, QUESTION)
    assert text.startswith("<s><|im_start|>user\n")
    # the trap: the tokenizer adds its BOS in front of the one the template wrote
    assert bos_qwen.encode(text)[:2] == [bos, bos]
    ids = chat.prompt_ids(bos_qwen, QUESTION)
    assert ids[:2] == [bos, START] and ids.count(bos) == 1
    assert ids[1:] == [
        START,
        324,
        271,
        198,
        712,
        318,
        291,
        220,
        17,
        10,
        17,
        30,
        END,
        198,
        *GENERATION_PROMPT_IDS,
    ]
    # raw text: the tokenizer's own BOS, once
    assert chat.prompt_ids(bos_qwen, QUESTION, "none") == [bos, 712, 318, 291, 220, 17, 10, 17, 30]
    # raw text that already starts with the BOS string (a pre-rendered prompt): still one
    assert chat.prompt_ids(bos_qwen, "<s>" + QUESTION, "none") == [bos, 712, 318, 291, 220, 17, 10, 17, 30]
    # SFT: the BOS stays at the head of the prompt, never before the solution
    head, answer = chat.sft_ids(bos_qwen, QUESTION, "4")
    assert head == ids and answer == [19, END] and bos not in answer
    head, answer = chat.sft_ids(bos_qwen, QUESTION, "4", "none")
    assert head.count(bos) == 1 and answer == [19, END]  # END is this variant's EOS


def test_auto_on_a_tokenizer_without_a_template_is_refused(qwen):
    bare = copy.deepcopy(qwen)
    bare.chat_template = None
    assert qwen.chat_template  # the shared fixture keeps its template
    for call in (
        lambda: chat.check_mode(bare, "auto"),
        lambda: chat.render_prompt_text(bare, QUESTION),
        lambda: chat.prompt_ids(bare, QUESTION),
        lambda: chat.sft_ids(bare, QUESTION, "4"),
    ):
        with pytest.raises(chat.ChatTemplateError, match="has no chat template"):
            call()
    # the other modes need no template of the tokenizer
    chat.check_mode(bare, "none")
    assert chat.prompt_ids(bare, QUESTION, "none") == chat.prompt_ids(qwen, QUESTION, "none")
    assert chat.prompt_ids(bare, QUESTION, BRACKETS) == chat.prompt_ids(qwen, QUESTION, BRACKETS)


def test_sft_learns_the_assistant_turn_only(qwen):
    solution = "The answer is 4."
    head, answer = chat.sft_ids(qwen, QUESTION, solution)
    assert head == chat.prompt_ids(qwen, QUESTION)  # the prompt exactly as rollouts render it
    # the assistant turn: the solution and <|im_end|>, not the newline the template writes after it
    assert answer == [674, 290, 291, 220, 19, 13, END]
    assert qwen.decode(answer) == solution + IM_END and answer[-1] == END
    assert qwen.decode(head + answer) == chat.render_prompt_text(qwen, QUESTION) + solution + IM_END
    # the trainer's labels: -100 over the prompt, the answer ids where the answer is
    ids, labels = encode_example(qwen, Example(prompt=QUESTION, answer="4", solution=solution), 512)
    assert ids == head + answer
    assert labels == [IGNORE] * len(head) + answer
    assert [t for t, y in zip(ids, labels, strict=True) if y != IGNORE] == answer


def test_end_of_turn_ids_of_the_qwen_tokenizer(qwen):
    assert qwen.convert_tokens_to_ids([ENDOFTEXT, IM_START, IM_END]) == [EOT, START, END]
    assert chat.end_of_turn_ids(qwen) == {EOT, END}
