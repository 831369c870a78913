"""A Qwen2-style byte-level BPE tokenizer and a random-init Qwen2 model, built locally (no hub).

Why: the chat-template, SFT-masking and GPU-smoke paths must be exercised with the tokenizer family
real policies use (Qwen2.5: byte-level BPE, ``<|im_start|>``/``<|im_end|>`` turns, no BOS) and the
real Qwen2.5-Instruct chat template, while nothing can be downloaded. The tiny char tokenizer of
:mod:`trainers.common.tiny` cannot stand in: it has a BOS and its own template.

What matches Qwen2 exactly: the normalizer (NFC), the pre-tokenizer (Qwen2's split regex, then
byte-level without its own regex), the byte-level decoder, the special tokens appended after the
BPE vocabulary (``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>``), no BOS, and the chat template
string. What differs: the merges are learned here from a small generated corpus (arithmetic and
English words), so ids and the vocabulary size are not Qwen's. ``<|endoftext|>`` is both EOS and pad
(as in the Qwen2.5 base checkpoints; the instruct ones name ``<|im_end|>`` as EOS, and
:func:`trainers.common.chat.end_of_turn_ids` stops on ``<|im_end|>`` either way).

Because the pipeline is Qwen2's own, ``AutoTokenizer`` on a saved directory (which resolves a
``qwen2`` model directory to ``Qwen2Tokenizer`` and rebuilds the pipeline from vocab and merges)
encodes exactly as the built tokenizer does; tests check that through
:func:`trainers.common.models.load_tokenizer`.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS: tuple[str, ...] = (ENDOFTEXT, IM_START, IM_END)

#: Qwen2's pre-tokenization regex (transformers ``models/qwen2/tokenization_qwen2.py``): single
#: digits, letter runs with one leading non-letter, punctuation runs, newline runs.
QWEN2_PRETOKENIZE_REGEX = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""

#: The chat template of Qwen2.5-Instruct (Qwen/Qwen2.5-0.5B-Instruct ... 72B-Instruct
#: tokenizer_config.json), byte for byte, default system message included. Copied from the JSON
#: string quoted in ShishirPatil/gorilla,
#: berkeley-function-call-leaderboard/bfcl/model_handler/local_inference/qwen.py
#: (commit 2ea5bb9bccd87e8a4f9ce7bc03af6844a409abf6), decoded with json.loads; the same string is
#: the Qwen2.5-0.5B-Instruct case of huggingface's swift-jinja template tests.
QWEN2_CHAT_TEMPLATE = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""

#: Words for the generated corpus: common English words, so merges cover ordinary text too.
_WORD_TEXT = (
    "the of and to in is you that it he was for on are as with his they at be this have from or one "
    "had by word but not what all were we when your can said there use an each which she do how their "
    "if will up other about out many then them these so some her would make like him into time has "
    "look two more write go see number no way could people my than first water been call who oil its "
    "now find long down day did get come made may part answer question compute step total sum product "
    "difference equals therefore first second third final result check again because half twice many "
    "apples books coins miles hours minutes price each left remaining altogether solve problem hello "
    "world assistant user system helpful created cloud model reason think carefully box boxed"
)
_WORDS = _WORD_TEXT.split()


_ONSETS = (
    "",
    "b",
    "c",
    "d",
    "f",
    "g",
    "h",
    "k",
    "l",
    "m",
    "n",
    "p",
    "r",
    "s",
    "t",
    "v",
    "w",
    "st",
    "tr",
    "pl",
    "ch",
)
_VOWELS = ("a", "e", "i", "o", "u", "ea", "ou", "io")
_CODAS = ("", "", "n", "r", "s", "t", "l", "nd", "ng", "st")


def _pseudo_word(rng: random.Random) -> str:
    """A pronounceable made-up word: enough distinct words for BPE to learn thousands of merges
    from a corpus small enough to train in a second."""
    return "".join(
        rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(rng.randint(1, 3))
    )


def generated_corpus(lines: int = 6000, seed: int = 0) -> Iterator[str]:
    """Deterministic training text: arithmetic with worked steps and a ``\\boxed{}`` answer, and
    sentences of common English words mixed with made-up ones (mixed case, punctuation, newlines)."""
    rng = random.Random(seed)
    ops = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
    # A fixed lexicon of made-up words drawn with a skewed distribution, as word frequencies are.
    lexicon = [_pseudo_word(rng) for _ in range(6000)]
    for i in range(lines):
        if i % 3 == 0:
            a, b, c = rng.randint(0, 999), rng.randint(0, 99), rng.randint(1, 9)
            op = rng.choice(list(ops))
            yield (
                f"Compute {a} {op} {b} * {c}.\nStep 1: {b} * {c} = {b * c}.\n"
                f"Step 2: {a} {op} {b * c} = {ops[op](a, b * c)}.\n"
                f"So the answer is \\boxed{{{ops[op](a, b * c)}}}.\n\n"
            )
        else:
            words = [
                rng.choice(_WORDS) if rng.random() < 0.5 else lexicon[int(len(lexicon) * rng.random() ** 2)]
                for _ in range(rng.randint(5, 16))
            ]
            words[0] = words[0].capitalize()
            yield " ".join(words) + rng.choice([".", "?", "!", ",", ":"]) + rng.choice([" ", "\n", "\n\n"])


def _backend() -> Tokenizer:
    backend = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    return backend


def build_qwen_style_tokenizer(
    vocab_size: int = 2048, corpus: Iterable[str] | None = None
) -> PreTrainedTokenizerFast:
    """A byte-level BPE with Qwen2's pipeline, special tokens and chat template; ``len()`` is at most
    ``vocab_size`` (the 256 byte symbols, the merges learned from ``corpus`` or
    :func:`generated_corpus`, then the three special tokens, in that id order as in Qwen2).

    Every string encodes (byte-level: no unknown token) and decodes back exactly."""
    if vocab_size < 256 + len(SPECIAL_TOKENS) + 1:
        raise ValueError(f"vocab_size must be at least {256 + len(SPECIAL_TOKENS) + 1}, got {vocab_size}")
    backend = _backend()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(SPECIAL_TOKENS),
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    backend.train_from_iterator(corpus if corpus is not None else generated_corpus(), trainer=trainer)
    backend.add_special_tokens(list(SPECIAL_TOKENS))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=ENDOFTEXT,
        pad_token=ENDOFTEXT,
        unk_token=None,
        bos_token=None,
        additional_special_tokens=[IM_START, IM_END],
        clean_up_tokenization_spaces=False,
        padding_side="left",
        model_max_length=32768,
    )
    tokenizer.chat_template = QWEN2_CHAT_TEMPLATE
    return tokenizer


def build_qwen_style_model(
    directory: str | Path,
    *,
    vocab_size: int = 151936,
    hidden_size: int = 896,
    layers: int = 24,
    heads: int = 14,
    kv_heads: int = 2,
    intermediate: int = 4864,
    seed: int = 0,
    tokenizer_vocab: int = 2048,
    max_position: int = 32768,
    dtype: torch.dtype = torch.bfloat16,
) -> Path:
    """Write a random-init ``Qwen2ForCausalLM`` (the defaults are Qwen2.5-0.5B's shape: 494M
    parameters with tied embeddings) and a :func:`build_qwen_style_tokenizer` to ``directory``.

    The model's embedding may be larger than the tokenizer (as Qwen's 151,936 rows exceed its
    151,665 tokens); ids past the tokenizer are never produced by it. The global RNG is left as it
    was; the weights depend only on ``seed`` and the shape. Saved with ``save_pretrained`` in
    ``dtype`` (bf16 by default, as Qwen ships)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_qwen_style_tokenizer(tokenizer_vocab)
    if vocab_size < len(tokenizer):
        raise ValueError(f"vocab_size {vocab_size} is smaller than the tokenizer ({len(tokenizer)})")
    eos = tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_position,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        use_sliding_window=False,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    model.to(dtype)
    model.generation_config.bos_token_id = eos
    model.generation_config.eos_token_id = [eos, tokenizer.convert_tokens_to_ids(IM_END)]
    model.generation_config.pad_token_id = eos
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
