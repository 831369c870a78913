"""How a model reads a prompt: the chat template, applied the same way in RL rollouts, DAPO, evaluation
and SFT (issue 10).

``chat_template`` in a config is ``auto`` (the tokenizer's own template, an error if it has none),
``none`` (the raw text, tokenized with the tokenizer's own special tokens) or a Jinja template string.
A prompt is a string (one user turn) or a conversation ``[{role, content}, ...]`` that is used as it
is. Rendering always opens the assistant turn (``add_generation_prompt``) and never yields two BOS
tokens: a template that writes BOS is tokenized without the tokenizer's own special tokens, and a
repeated leading BOS is collapsed (Llama/Gemma templates plus a BOS-adding tokenizer would otherwise
shift every position, as Skywork-Reward found).

SFT renders the prompt the same way and learns the assistant turn only: the solution's tokens, up to
and including the end-of-turn token, with no BOS in front of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Message = dict[str, str]
PromptLike = str | Sequence[Message]


class ChatTemplateError(ValueError):
    """``chat_template: auto`` on a tokenizer without a template, or a template that fails to render."""


def has_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def check_mode(tokenizer: Any, mode: str) -> None:
    """Raise :class:`ChatTemplateError` when ``mode`` cannot be used with ``tokenizer``."""
    if mode == "auto" and not has_template(tokenizer):
        raise ChatTemplateError(
            "chat_template is 'auto' but the model's tokenizer has no chat template; "
            "set chat_template to 'none' (raw text) or to a Jinja template"
        )


def _messages(prompt: PromptLike) -> list[Message]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [dict(m) for m in prompt]


def _template_arg(mode: str) -> dict[str, Any]:
    return {} if mode == "auto" else {"chat_template": mode}


def _one_bos(tokenizer: Any, ids: list[int]) -> list[int]:
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return ids
    start = 0
    while start + 1 < len(ids) and ids[start] == bos and ids[start + 1] == bos:
        start += 1
    return ids[start:]


def render_prompt_text(tokenizer: Any, prompt: PromptLike, mode: str = "auto") -> str:
    """The text the model reads before its answer (for display and for string-prompt engines)."""
    if mode == "none":
        if isinstance(prompt, str):
            return prompt
        return "\n\n".join(m["content"] for m in prompt)
    check_mode(tokenizer, mode)
    try:
        return tokenizer.apply_chat_template(
            _messages(prompt), tokenize=False, add_generation_prompt=True, **_template_arg(mode)
        )
    except Exception as exc:  # a Jinja error names the template, not the field: say which it was
        raise ChatTemplateError(f"chat_template could not render a prompt: {exc}") from exc


def prompt_ids(tokenizer: Any, prompt: PromptLike, mode: str = "auto") -> list[int]:
    """Token ids of a rendered prompt, ending where the assistant's answer begins."""
    text = render_prompt_text(tokenizer, prompt, mode)
    ids = tokenizer.encode(text, add_special_tokens=(mode == "none"))
    return _one_bos(tokenizer, list(ids))


def render_prompts(tokenizer: Any, prompts: Sequence[PromptLike], mode: str = "auto") -> list[list[int]]:
    return [prompt_ids(tokenizer, p, mode) for p in prompts]


#: end-of-turn tokens of common chat templates (Qwen/ChatML, Llama 3, Gemma), besides the EOS token
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>")


def end_of_turn_ids(tokenizer: Any) -> set[int]:
    """EOS plus the end-of-turn tokens the tokenizer knows: where an assistant turn stops."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    vocab = tokenizer.get_vocab()
    ids.update(vocab[t] for t in END_OF_TURN_TOKENS if t in vocab)
    return ids


def sft_ids(
    tokenizer: Any, prompt: PromptLike, solution: str, mode: str = "auto"
) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids) of one SFT example; the loss is taken on the answer ids only.

    With a template, the answer is what the template writes for the assistant turn after the
    generation prompt, cut after its first end-of-sequence token (Qwen's ``<|im_end|>`` and our tiny
    model's ``<eos>``; a trailing newline after it is not learned). Without a template, the solution
    followed by EOS. Neither starts with BOS."""
    eos = tokenizer.eos_token_id
    head = prompt_ids(tokenizer, prompt, mode)
    if mode == "none":
        answer = list(tokenizer.encode(solution, add_special_tokens=False))
        return head, answer + ([eos] if eos is not None else [])
    messages = [*_messages(prompt), {"role": "assistant", "content": solution}]
    try:
        full = tokenizer.apply_chat_template(messages, tokenize=False, **_template_arg(mode))
    except Exception as exc:
        raise ChatTemplateError(f"chat_template could not render an SFT example: {exc}") from exc
    opened = render_prompt_text(tokenizer, prompt, mode)
    # Templates that rewrite earlier turns once an answer exists (e.g. dropping reasoning): fall back
    # to the solution text itself.
    tail = full[len(opened) :] if full.startswith(opened) else solution
    answer = list(tokenizer.encode(tail, add_special_tokens=False))
    ends = end_of_turn_ids(tokenizer)
    cut = next((i for i, t in enumerate(answer) if t in ends), None)
    if cut is not None:
        answer = answer[: cut + 1]
    elif eos is not None:
        answer.append(eos)
    bos = getattr(tokenizer, "bos_token_id", None)
    while answer and bos is not None and answer[0] == bos:
        answer = answer[1:]
    return head, answer
