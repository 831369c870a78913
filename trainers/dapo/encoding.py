"""Token ids of DAPO's states: what every model in the pipeline reads (seeds-spec 2.1, issue 10).

A state after t steps is the problem's prompt rendered with the chat template (``chat_template``:
auto | none | a Jinja template; trainers.common.chat, which never yields two BOS tokens), then the
steps, each encoded on its own without special tokens. The same ids go to every reader: solution
sampling and Monte-Carlo rollouts from a prefix (the engines take id lists), candidate steps, the
critic's inputs and the actor's log-probs. So the ids of a state are a prefix of the ids of every
later state (a BPE merge across a step boundary is not made; with the char tokenizer this is exactly
the sampled text), and a model trained on rendered prompts (the SFT warm start) sees its own format.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from trainers.common.chat import check_mode, prompt_ids


class StateEncoder:
    """Renders prompts once (a cache keyed by the prompt) and appends step ids."""

    def __init__(self, tokenizer: Any, chat_template: str):
        check_mode(tokenizer, chat_template)
        self.tokenizer, self.mode = tokenizer, chat_template
        self._prompts: dict[str, list[int]] = {}

    def prompt(self, prompt: Any) -> list[int]:
        """The rendered prompt's ids (a string, or a conversation used as it is)."""
        key = prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True)
        if key not in self._prompts:
            self._prompts[key] = prompt_ids(self.tokenizer, prompt, self.mode)
        return list(self._prompts[key])

    def steps(self, steps: Sequence[str]) -> list[int]:
        ids: list[int] = []
        for step in steps:
            ids += self.tokenizer.encode(step, add_special_tokens=False)
        return ids

    def state(self, prompt: Any, steps: Sequence[str]) -> list[int]:
        """Ids of the state prompt + steps."""
        return self.prompt(prompt) + self.steps(steps)
