"""Completion text as zstd frames, one per completion (random access), with an optional dictionary.
No Django here: webapp.runs.sample_text keeps the dictionaries in the database and picks one per run.

Why a dictionary: a 2 KB completion compressed alone is ~1.6x the size of the same text in one zstd -3
stream (each frame starts with an empty window); a dictionary trained on the run's first ~1,000-2,000
completions brings it to ~1.1x (bench/RESULTS.md, issue 14), still one frame per completion.

Frames are standard zstd frames at ``LEVEL`` with the content size and without the dictionary id (the
row stores which dictionary). An empty text is stored as b"" (no frame)."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence

import zstandard as zstd

LEVEL = 3
DICT_BYTES = 112 * 1024  # the dictionary's size for a run of ~2 KB completions
MIN_DICT_BYTES = 4 * 1024
TRAIN_SAMPLES = 2_000  # completions a dictionary is trained on (at most)
# fastcover with fixed parameters: ~0.2-0.7 s for 1,000-2,000 completions; letting zstd search its
# parameters (the default) takes ~4 s for ~3 % smaller frames (measured on the bench's text)
TRAIN_PARAMS = {"k": 2048, "d": 8}


def train(texts: Sequence[str]) -> bytes | None:
    """A dictionary for these completions, or None when they are too few or too short to train one
    (zstd needs samples of ~10x the dictionary's size; a failed training raises nothing here)."""
    samples = [t.encode("utf-8") for t in texts[:TRAIN_SAMPLES] if t]
    total = sum(len(s) for s in samples)
    size = min(DICT_BYTES, total // 20)
    if len(samples) < 100 or size < MIN_DICT_BYTES:
        return None
    try:
        return zstd.train_dictionary(size, samples, **TRAIN_PARAMS).as_bytes()
    except zstd.ZstdError:
        return None


class Codec:
    """Compress / decompress with one dictionary (or none). Not thread-safe (zstandard's compressor
    objects are not): use ``codec(key, data)`` for a per-thread instance."""

    def __init__(self, dictionary: bytes | None = None):
        if dictionary:
            cdict = zstd.ZstdCompressionDict(dictionary)
            cdict.precompute_compress(level=LEVEL)
            self._c = zstd.ZstdCompressor(level=LEVEL, dict_data=cdict, write_dict_id=False)
            self._d = zstd.ZstdDecompressor(dict_data=zstd.ZstdCompressionDict(dictionary))
        else:
            self._c = zstd.ZstdCompressor(level=LEVEL, write_dict_id=False)
            self._d = zstd.ZstdDecompressor()

    def compress(self, text: str) -> bytes:
        return self._c.compress(text.encode("utf-8")) if text else b""

    def compress_many(self, texts: Iterable[str]) -> list[bytes]:
        c = self._c.compress
        return [c(t.encode("utf-8")) if t else b"" for t in texts]

    def decompress(self, frame: bytes | memoryview) -> str:
        return self._d.decompress(frame).decode("utf-8") if frame else ""


_local = threading.local()


def codec(key: int, dictionary: bytes | None) -> Codec:
    """This thread's Codec for dictionary ``key`` (0: none; ``dictionary`` read only on first use)."""
    cache = getattr(_local, "codecs", None)
    if cache is None:
        cache = _local.codecs = {}
    c = cache.get(key)
    if c is None:
        c = cache[key] = Codec(dictionary if key else None)
    return c
