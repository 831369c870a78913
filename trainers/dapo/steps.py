"""Splitting a solution into reasoning steps, the actions of DAPO's step-level MDP (seeds-spec 2.1).

A step keeps its boundary text: with a delimiter, every step but the last ends with it; with markers
("Step k:"), every step after the first starts with one. So ``"".join(split(text)) == text`` always
holds, the state after t steps is ``prompt + "".join(steps[:t])``, and a sampled next step can be
appended to a state as it is."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class StepSplitter:
    """``mode="delimiter"``: a step ends with (and includes) ``delimiter``; ``mode="marker"``: a step
    starts at each match of the regular expression ``marker`` (text before the first marker is a step
    of its own). ``max_steps`` (0: no limit) folds everything after step ``max_steps - 1`` into the
    last step, so long solutions do not explode the number of Monte-Carlo prefixes."""

    mode: str = "delimiter"
    delimiter: str = "\n"
    marker: str = r"Step \d+:"
    max_steps: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("delimiter", "marker"):
            raise ValueError(f"mode must be 'delimiter' or 'marker', got {self.mode!r}")
        if self.mode == "delimiter" and not self.delimiter:
            raise ValueError("the step delimiter must not be empty")
        if self.mode == "marker":
            try:
                compiled = re.compile(self.marker)
            except re.error as exc:
                raise ValueError(f"marker is not a valid regular expression: {exc}") from None
            if compiled.search("") is not None:
                raise ValueError("marker must not match the empty string")

    def _boundaries(self, text: str) -> list[int]:
        """Positions where a new step starts (excluding 0 and len(text))."""
        if self.mode == "delimiter":
            out, start = [], 0
            while (i := text.find(self.delimiter, start)) >= 0:
                start = i + len(self.delimiter)
                out.append(start)
            return [b for b in out if b < len(text)]
        return [m.start() for m in re.finditer(self.marker, text) if m.start() > 0]

    def split(self, text: str) -> list[str]:
        """The steps of ``text`` (at least one; an empty text is one empty step)."""
        cuts = [0, *self._boundaries(text), len(text)]
        steps = [text[a:b] for a, b in zip(cuts, cuts[1:], strict=False)] or [text]
        if self.max_steps and len(steps) > self.max_steps:
            steps = steps[: self.max_steps - 1] + ["".join(steps[self.max_steps - 1 :])]
        return steps

    def first_step(self, text: str) -> tuple[str, bool]:
        """The first step of a continuation and whether a step boundary ended it (False: the text
        ran out first, i.e. the step is the final one or was truncated)."""
        if self.mode == "delimiter":
            i = text.find(self.delimiter)
            if i < 0:
                return text, False
            return text[: i + len(self.delimiter)], True
        cuts = self._boundaries(text)
        return (text[: cuts[0]], True) if cuts else (text, False)
