"""The result of scoring one completion: a binary reward plus the reason for it."""

from __future__ import annotations

from dataclasses import asdict, dataclass

VERDICTS = ("correct", "wrong", "no_answer", "timeout", "error")


@dataclass
class Verdict:
    reward: float  # 1.0 only for "correct"
    verdict: str  # one of VERDICTS
    answer: str | None = None  # what was extracted from the completion (the answer, or the program)
    detail: str = ""

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"unknown verdict {self.verdict!r}")
        self.reward = 1.0 if self.verdict == "correct" else 0.0

    @property
    def correct(self) -> bool:
        return self.verdict == "correct"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def fail(cls, verdict: str, detail: str = "", answer: str | None = None) -> Verdict:
        return cls(0.0, verdict, answer, detail)

    @classmethod
    def ok(cls, answer: str | None = None, detail: str = "") -> Verdict:
        return cls(1.0, "correct", answer, detail)


def after_think(text: str) -> str:
    """The text after the first "</think>" (the whole text when there is none, e.g. a truncated response)."""
    head, sep, tail = text.partition("</think>")
    return tail if sep else text
