"""A tiny character-level tokenizer and a random-init Qwen2-style causal LM, built locally.

Why: CPU demos and tests need a real transformers model (the same classes, cache and checkpoint
format as a Qwen2.5 policy) without downloading anything. A character vocabulary keeps the model
small (about 100 ids) and makes ``decode(encode(s)) == s`` exact for arithmetic text, which a
byte-level BPE trained on nothing could not promise.

The saved directory is an ordinary ``save_pretrained`` checkpoint (config.json, model.safetensors,
tokenizer.json, tokenizer_config.json) plus one marker key, ``orlab_tokenizer: "char"``, in
tokenizer_config.json. ``trainers.common.models.load_policy`` reads that key and loads the tokenizer
with ``PreTrainedTokenizerFast`` directly: ``AutoTokenizer`` on a ``qwen2`` directory would swap it
for a byte-level Qwen2 tokenizer (see docs/packaging.md).
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

#: Key written into tokenizer_config.json so loaders know to bypass AutoTokenizer.
TOKENIZER_MARKER_KEY = "orlab_tokenizer"
TOKENIZER_MARKER_VALUE = "char"

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, BOS, EOS, UNK)

#: Every character the tokenizer knows, in id order after the special tokens. string.punctuation
#: covers + - * / = ( ) . , and the \ { } of \boxed{...}; space, newline and tab are kept verbatim.
ALPHABET: str = string.digits + string.ascii_lowercase + string.ascii_uppercase + string.punctuation + " \n\t"

#: user/assistant turns, one per line; an assistant turn ends with <eos> so a model trained on
#: rendered conversations learns to stop. ``add_generation_prompt`` opens the assistant turn.
CHAT_TEMPLATE: str = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{{- message['role'] + ': ' + message['content'] -}}"
    "{%- if message['role'] == 'assistant' -%}{{- eos_token -}}{%- endif -%}"
    "{{- '\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- 'assistant: ' -}}{%- endif -%}"
)


def build_char_tokenizer() -> PreTrainedTokenizerFast:
    """The character-level tokenizer: one id per character, nothing merged, nothing normalised.

    The pre-tokenizer isolates every character (``[\\s\\S]`` also matches newlines, which ``.``
    would not), WordLevel maps it to its id, and the ``Fuse`` decoder concatenates without the
    spaces a WordLevel decode would otherwise insert. ``clean_up_tokenization_spaces`` is off,
    since it would turn " ," into ",". No BOS/EOS is added on encode: the chat template adds them.
    """
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in ALPHABET:
        vocab.setdefault(ch, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens(list(SPECIAL_TOKENS))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        clean_up_tokenization_spaces=False,
        padding_side="left",
        model_max_length=512,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_config(
    vocab_size: int,
    *,
    hidden: int = 128,
    layers: int = 4,
    heads: int = 4,
    kv_heads: int | None = None,
    pad_token_id: int = 0,
    bos_token_id: int = 1,
    eos_token_id: int = 2,
    max_position: int = 512,
) -> Qwen2Config:
    """A Qwen2 config scaled down: GQA (half as many KV heads), SwiGLU width ~2.75 x hidden rounded
    to a multiple of 32 (352 for 128), tied embeddings, no sliding window."""
    kv = kv_heads if kv_heads is not None else max(1, heads // 2)
    if hidden % heads or heads % kv:
        raise ValueError(f"hidden ({hidden}) must divide by heads ({heads}) and heads by kv heads ({kv})")
    return Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=int(round(hidden * 2.75 / 32)) * 32,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        max_position_embeddings=max_position,
        tie_word_embeddings=True,
        use_sliding_window=False,
        pad_token_id=pad_token_id,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
    )


def build_tiny_model(
    directory: str | Path,
    *,
    seed: int = 0,
    hidden: int = 128,
    layers: int = 4,
    heads: int = 4,
    init_std: float | None = None,
) -> Path:
    """Write a random-init tiny Qwen2 policy and its char tokenizer to ``directory``; return it.

    The weights depend only on ``seed`` and the sizes (the global RNG is forked, so callers' random
    state is untouched). Saved as safetensors with ``save_pretrained``; load it back with
    ``trainers.common.models.load_policy``.

    ``init_std`` defaults to 1/sqrt(hidden) (0.088 for 128), not HF's 0.02: with 0.02 a random
    tied-embedding model barely mixes positions and greedy decoding just repeats the last prompt
    character, which would let tests of the KV cache and left padding pass vacuously.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_char_tokenizer()
    config = tiny_config(
        len(tokenizer),
        hidden=hidden,
        layers=layers,
        heads=heads,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    config.initializer_range = init_std if init_std is not None else hidden**-0.5
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    mark_char_tokenizer(directory)
    return directory


def mark_char_tokenizer(directory: str | Path) -> None:
    """Add the marker key (and the explicit tokenizer class) to ``directory``/tokenizer_config.json."""
    path = Path(directory) / "tokenizer_config.json"
    data = json.loads(path.read_text())
    data[TOKENIZER_MARKER_KEY] = TOKENIZER_MARKER_VALUE
    data["tokenizer_class"] = "PreTrainedTokenizerFast"
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def is_char_tokenizer_dir(directory: str | Path) -> bool:
    """True when ``directory`` holds a tokenizer written by :func:`build_tiny_model`."""
    path = Path(directory) / "tokenizer_config.json"
    if not path.is_file():
        return False
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return data.get(TOKENIZER_MARKER_KEY) == TOKENIZER_MARKER_VALUE
