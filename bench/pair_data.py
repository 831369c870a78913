"""Generated preference data for the issue-3 benchmarks (import and pair search).

Rows look like the public sets: a prompt of ~20 words, a chosen response of ~28 and a rejected one of
~25, from 3 sources; every 10th row is a chat conversation instead of plain text. Words follow a
Zipf law over a vocabulary of real English words (the most frequent ranks) and made-up ones, so a
search meets the whole range: words in most rows ("explain", "answer"), in a few percent, and in a
handful of rows ("zymurgy" is planted in ``RARE_ROWS`` rows only)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SOURCES = ("helpsteer2", "magpie_ultra", "offsetbias")
# Ranks 0.. of the Zipf law: stop words first (to_tsvector drops them), then content words.
COMMON = [
    "the",
    "of",
    "and",
    "to",
    "a",
    "in",
    "is",
    "that",
    "for",
    "it",
    "as",
    "with",
    "be",
    "on",
    "this",
    "by",
    "are",
    "or",
    "can",
    "from",
    "which",
    "you",
    "your",
    "explain",
    "answer",
    "step",
    "number",
    "value",
    "function",
    "result",
    "example",
    "problem",
    "first",
    "code",
    "python",
    "list",
    "data",
    "time",
    "question",
    "method",
    "use",
    "make",
    "because",
    "each",
    "given",
    "write",
    "return",
    "string",
    "two",
    "following",
    "simple",
    "case",
    "input",
    "output",
    "approach",
    "need",
    "think",
    "order",
    "solution",
    "way",
    "check",
    "model",
    "test",
    "error",
]
RARE_WORD = "zymurgy"
RARE_ROWS = 7
_SYLLABLES = [
    "ka",
    "lo",
    "mi",
    "ne",
    "ru",
    "sa",
    "ti",
    "vo",
    "ze",
    "po",
    "la",
    "qui",
    "den",
    "mar",
    "tis",
    "bel",
    "cor",
    "fin",
    "gal",
    "hum",
]


def vocabulary(size: int = 20_000) -> list[str]:
    words = list(COMMON)
    n = len(_SYLLABLES)
    i = 0
    while len(words) < size:
        a, b, c = _SYLLABLES[i % n], _SYLLABLES[(i // n) % n], _SYLLABLES[(i // n // n) % n]
        words.append(a + b + c + ("" if i < n**3 else str(i // n**3)))
        i += 1
    return words


def write_pairs(path: Path, n: int, *, seed: int = 0, chunk: int = 20_000) -> Path:
    """``n`` pairs as JSONL, written a chunk at a time (a 1M-pair file never sits in memory)."""
    rng = np.random.default_rng(seed)
    vocab = np.array(vocabulary(), dtype=object)
    weights = 1.0 / np.arange(1, len(vocab) + 1) ** 1.07
    weights /= weights.sum()
    rare = set(np.linspace(n // 10, n - 1, RARE_ROWS).astype(int).tolist())
    with open(path, "w") as f:
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            words = vocab[rng.choice(len(vocab), size=(m, 73), p=weights)]
            lines = []
            for j in range(m):
                i = start + j
                w = words[j]
                prompt = " ".join(w[:20]).capitalize() + "?"
                chosen = " ".join(w[20:48]).capitalize() + "."
                rejected = " ".join(w[48:73]).capitalize() + "."
                if i in rare:
                    prompt += f" Tell me about {RARE_WORD}."
                source = SOURCES[i % 3]
                if i % 10 == 9:
                    turn = [{"role": "user", "content": prompt}]
                    row = {
                        "chosen": turn + [{"role": "assistant", "content": chosen}],
                        "rejected": turn + [{"role": "assistant", "content": rejected}],
                        "source": source,
                    }
                else:
                    row = {"prompt": prompt, "chosen": chosen, "rejected": rejected, "source": source}
                lines.append(json.dumps(row))
            f.write("\n".join(lines) + "\n")
    return path


if (
    __name__ == "__main__"
):  # python -m bench.pair_data OUT.jsonl N (a process of its own: its memory is not the import's)
    import sys

    write_pairs(Path(sys.argv[1]), int(sys.argv[2]))
