"""The curation steps: pure functions, no ORM.

Each step takes the pairs as plain rows (mappings with ``id``, ``row``, ``prompt``, ``chosen_text``,
``rejected_text``, ``chosen_len``, ``rejected_len``, ``source``, ``metadata`` and, for the
reward-model steps, ``score`` (the chosen score) and ``margin``; a step reads only the keys it
needs, see ``needs``) plus its params (a model of ``recipes`` or an equivalent dict) and returns one
entry per row: None (kept) or a short reason naming the step. Rows may be any iterable: every step
reads them once and keeps only compact per-row state, so the service can stream them from the
database. ``run_steps`` applies a list of steps in order, each to the rows still kept."""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
import zlib
from array import array
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from webapp.datasets.curation import recipes as r

Reason = str | None
Row = Mapping[str, Any]

_WORD = re.compile(r"\w+")


def normalise(text: str) -> str:
    """NFKC, case-folded, whitespace collapsed: the key of exact matches."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def words(text: str) -> list[str]:
    return _WORD.findall(unicodedata.normalize("NFKC", text).casefold())


def _row_no(row: Row, index: int) -> int:
    value = row.get("row")
    return int(value) if value is not None else index


def _fmt(x: float) -> str:
    return f"{x:.3g}"


# --- exact_dedup --------------------------------------------------------------------------------


def exact_dedup(rows: Iterable[Row], params) -> list[Reason]:
    p = r.step_validate(params)
    seen: set[bytes] = set()
    out: list[Reason] = []
    for row in rows:
        key = normalise(row["prompt"])
        if p.key == "prompt+chosen":
            key += "\x00" + normalise(row["chosen_text"])
        digest = hashlib.blake2b(key.encode(), digest_size=12).digest()
        if digest in seen:
            out.append("exact_duplicate")
        else:
            seen.add(digest)
            out.append(None)
    return out


# --- near_dedup: MinHash LSH, vectorised across documents ----------------------------------------

_U64 = np.uint64
_FMIX64 = (_U64(33), _U64(0xFF51AFD7ED558CCD), _U64(33), _U64(0xC4CEB9FE1A85EC53), _U64(33))
_FMIX32 = (np.uint32(16), np.uint32(0x85EBCA6B), np.uint32(13), np.uint32(0xC2B2AE35), np.uint32(16))
_SHINGLE_MUL = _U64(0x9E3779B97F4A7C15)
_MERSENNE = _U64((1 << 61) - 1)
_MAX32 = _U64((1 << 32) - 1)


def _fmix(h: np.ndarray, consts) -> np.ndarray:
    s1, m1, s2, m2, s3 = consts
    h = h ^ (h >> s1)
    h = h * m1
    h = h ^ (h >> s2)
    h = h * m2
    return h ^ (h >> s3)


class _WordHashes(dict):
    """word -> stable 32-bit hash (+1), computed once per word."""

    def __missing__(self, word: str) -> int:
        value = self[word] = zlib.crc32(word.encode()) + 1
        return value


class MinHasher:
    """MinHash signatures of word-shingle sets, many documents at a time.

    The permutations are datasketch's (``MinHash(num_perm, seed).permutations``, its default
    scheme), so a signature equals ``datasketch.MinHash(num_perm, seed, hashfunc=...)`` updated with
    the same shingle hashes (``shingle_hashes``); the per-document Python work is only tokenising.
    The banding (b bands of r rows) is datasketch's optimum for the threshold (``MinHashLSH``)."""

    CHUNK_WORDS = 1 << 16

    def __init__(self, num_perm: int = 128, seed: int = 1, shingle: int = 5, threshold: float | None = None):
        from datasketch import MinHash, MinHashLSH

        mh = MinHash(num_perm=num_perm, seed=seed)
        self.scheme = getattr(mh, "scheme", "legacy")
        a, b = mh.permutations
        if self.scheme == "affine32":
            self.a, self.b = a.astype(np.uint32), b.astype(np.uint32)
        elif self.scheme == "legacy":
            self.a, self.b = a.astype(np.uint64), b.astype(np.uint64)
        else:  # pragma: no cover - datasketch's 64-bit scheme is opt-in only
            raise ValueError(f"unsupported datasketch MinHash scheme {self.scheme!r}")
        self.num_perm = num_perm
        self.shingle = shingle
        if threshold is not None:
            lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
            self.bands, self.rows_per_band = lsh.b, lsh.r
            rng = np.random.default_rng(seed)
            self._band_weights = rng.integers(1, 2**63, size=self.rows_per_band, dtype=np.uint64) | _U64(1)
        self._word_hash = _WordHashes()

    def _shingles(self, word_hashes: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Shingle hashes (uint32) of documents whose word hashes are concatenated, and the number
        of shingles per document. A document shorter than ``shingle`` words has one shingle (all its
        words); an empty one has none."""
        k = self.shingle
        n_sh = np.where(lengths >= k, lengths - k + 1, np.minimum(lengths, 1))
        total = int(n_sh.sum())
        if total == 0:
            return np.zeros(0, np.uint32), n_sh
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        sh_starts = np.concatenate([[0], np.cumsum(n_sh)[:-1]])
        doc = np.repeat(np.arange(len(lengths)), n_sh)
        pos = starts[doc] + (np.arange(total) - sh_starts[doc])
        sh_len = np.minimum(lengths, k)[doc].astype(np.uint64)
        h = np.zeros(total, np.uint64)
        last = len(word_hashes) - 1
        for j in range(k):
            use = _U64(j) < sh_len
            h = np.where(use, h * _SHINGLE_MUL + word_hashes[np.minimum(pos + j, last)], h)
        h = _fmix(h ^ sh_len, _FMIX64)
        return (h >> _U64(32)).astype(np.uint32), n_sh

    def shingle_hashes(self, text: str) -> np.ndarray:
        toks = words(text)
        wh = np.fromiter(map(self._word_hash.__getitem__, toks), np.uint64, len(toks))
        return self._shingles(wh, np.array([len(toks)]))[0]

    def _signatures(self, hv: np.ndarray, n_sh: np.ndarray) -> np.ndarray:
        """(docs with at least one shingle) x num_perm signature rows."""
        if self.scheme == "affine32":
            phv = self.a[:, None] * _fmix(hv, _FMIX32)[None, :]
            phv += self.b[:, None]
        else:
            phv = ((self.a[:, None] * hv.astype(np.uint64)[None, :] + self.b[:, None]) % _MERSENNE) & _MAX32
        offsets = np.concatenate([[0], np.cumsum(n_sh[n_sh > 0])[:-1]])
        # permutations x shingles, reduced along the contiguous axis (10x faster than axis 0)
        return np.minimum.reduceat(phv, offsets, axis=1).T

    def signature(self, text: str) -> np.ndarray | None:
        hv = self.shingle_hashes(text)
        if len(hv) == 0:
            return None
        return self._signatures(hv, np.array([len(hv)]))[0]

    def band_keys(self, texts: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
        """(keys, has_signature): keys is documents x bands (uint64 hash of each band); rows of
        documents without words are zero and has_signature False."""
        b, rr = self.bands, self.rows_per_band
        key_chunks: list[np.ndarray] = []
        has: list[np.ndarray] = []
        buf: list[int] = []
        lengths: list[int] = []

        def flush():
            lens = np.array(lengths, dtype=np.int64)
            wh = np.array(buf, dtype=np.uint64)
            hv, n_sh = self._shingles(wh, lens)
            keys = np.zeros((len(lens), b), np.uint64)
            ok = n_sh > 0
            if ok.any():
                sig = self._signatures(hv, n_sh)[:, : b * rr].astype(np.uint64).reshape(-1, b, rr)
                keys[ok] = _fmix((sig * self._band_weights).sum(axis=2, dtype=np.uint64), _FMIX64)
            key_chunks.append(keys)
            has.append(ok)
            buf.clear()
            lengths.clear()
            if len(self._word_hash) > 2_000_000:
                self._word_hash.clear()

        word_hash = self._word_hash.__getitem__
        for text in texts:
            toks = words(text)
            buf.extend(map(word_hash, toks))
            lengths.append(len(toks))
            if len(buf) >= self.CHUNK_WORDS or len(lengths) >= 4096:
                flush()
        if lengths or not key_chunks:
            flush()
        return np.concatenate(key_chunks), np.concatenate(has)


def lsh_clusters(keys: np.ndarray, has: np.ndarray) -> np.ndarray:
    """For each document the smallest index of its cluster: documents sharing a bucket in any band
    are linked, and clusters are the connected components."""
    n = len(keys)
    labels = np.arange(n)
    valid = np.flatnonzero(has)
    if len(valid) < 2:
        return labels
    us, vs = [], []
    for band in range(keys.shape[1]):
        k = keys[valid, band]
        order = np.argsort(k, kind="stable")
        ks = k[order]
        same = ks[1:] == ks[:-1]
        if not same.any():
            continue
        starts = np.where(np.concatenate([[True], ~same]), np.arange(len(ks)), 0)
        first = order[np.maximum.accumulate(starts)]
        us.append(valid[first[1:][same]])
        vs.append(valid[order[1:][same]])
    if not us:
        return labels
    u, v = np.concatenate(us), np.concatenate(vs)
    while True:
        m = np.minimum(labels[u], labels[v])
        np.minimum.at(labels, u, m)
        np.minimum.at(labels, v, m)
        while True:  # pointer jumping: every label becomes its root's
            jumped = labels[labels]
            if np.array_equal(jumped, labels):
                break
            labels = jumped
        if np.array_equal(labels[u], labels[v]):
            return labels


def near_dedup(rows: Iterable[Row], params) -> list[Reason]:
    p = r.step_validate(params)
    hasher = MinHasher(num_perm=p.num_perm, seed=p.seed, shingle=p.shingle, threshold=p.threshold)
    row_nos = array("q")

    def prompts():
        for i, row in enumerate(rows):
            row_nos.append(_row_no(row, i))
            yield row["prompt"]

    keys, has = hasher.band_keys(prompts())
    if not row_nos:
        return []
    labels = lsh_clusters(keys, has)
    out: list[Reason] = [None] * len(row_nos)
    for i in np.flatnonzero(labels != np.arange(len(labels))):
        out[i] = f"near_duplicate of row {row_nos[labels[i]]}"
    return out


# --- length, length_ratio, near_identical --------------------------------------------------------


def length(rows: Iterable[Row], params) -> list[Reason]:
    p = r.step_validate(params)
    checks = []
    for part, key in (("prompt", "prompt_len"), ("chosen", "chosen_len"), ("rejected", "rejected_len")):
        lo, hi = getattr(p, f"min_{part}"), getattr(p, f"max_{part}")
        if lo is not None or hi is not None:
            checks.append((part, key, lo, hi))
    out: list[Reason] = []
    for row in rows:
        reason = None
        for part, key, lo, hi in checks:
            n = row.get(key)
            if n is None:
                n = len(row[part] if part == "prompt" else row[f"{part}_text"])
            if hi is not None and n > hi:
                reason = f"length: {part} > {hi}"
            elif lo is not None and n < lo:
                reason = f"length: {part} < {lo}"
            if reason:
                break
        out.append(reason)
    return out


def length_ratio(rows: Iterable[Row], params) -> list[Reason]:
    p = r.step_validate(params)
    out: list[Reason] = []
    for row in rows:
        a, b = int(row["chosen_len"]), int(row["rejected_len"])
        ratio = max(a, b) / max(min(a, b), 1)
        out.append(f"length_ratio {_fmt(ratio)} > {p.max_ratio:g}" if ratio > p.max_ratio else None)
    return out


def _shingle_set(text: str, k: int) -> set:
    toks = words(text)
    if len(toks) < k:
        return {tuple(toks)} if toks else set()
    return set(zip(*(toks[j:] for j in range(k)), strict=False))


def jaccard(a: str, b: str, k: int = 3) -> float:
    """Jaccard similarity of the word k-shingle sets of two texts (texts without words: 1.0 when
    their normalised forms are equal, else 0.0)."""
    sa, sb = _shingle_set(a, k), _shingle_set(b, k)
    if not sa or not sb:
        return 1.0 if normalise(a) == normalise(b) else 0.0
    inter = len(sa & sb)
    return inter / (len(sa) + len(sb) - inter)


def near_identical(rows: Iterable[Row], params) -> list[Reason]:
    p = r.step_validate(params)
    out: list[Reason] = []
    for row in rows:
        sim = jaccard(row["chosen_text"], row["rejected_text"], p.shingle)
        out.append(f"near_identical ({sim:.2f})" if sim >= p.threshold else None)
    return out


# --- source_select --------------------------------------------------------------------------------


def _quotas(mix: dict[str, float], total: int) -> dict[str, int]:
    """Largest-remainder split of ``total`` by the ratios of ``mix``."""
    weight = sum(mix.values())
    exact = {s: total * w / weight for s, w in mix.items()}
    quota = {s: math.floor(x) for s, x in exact.items()}
    left = total - sum(quota.values())
    for s in sorted(exact, key=lambda s: (quota[s] - exact[s], s))[:left]:
        quota[s] += 1
    return quota


def source_select(rows: Iterable[Row], params) -> list[Reason]:
    p = r.step_validate(params)
    sources = [str(row.get("source") or "") for row in rows]
    out: list[Reason] = [None] * len(sources)
    include = set(p.include) if p.include is not None else None
    if p.mix is not None:
        include = set(p.mix) if include is None else include & set(p.mix)
    by_source: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(sources):
        if include is not None and s not in include:
            out[i] = "source_not_selected"
        else:
            by_source[s].append(i)
    rng = np.random.default_rng(p.seed)
    limits: list[tuple[dict[str, int], str]] = []
    if p.mix is not None:
        limits.append((_quotas(p.mix, p.total), "source_mix"))
    if p.caps:
        limits.append((p.caps, "source_cap"))
    for limit, label in limits:
        for s in sorted(by_source):
            idx = by_source[s]
            cap = limit.get(s)
            if cap is None or len(idx) <= cap:
                continue
            keep = np.sort(rng.choice(len(idx), size=cap, replace=False))
            mask = np.ones(len(idx), bool)
            mask[keep] = False
            for j in np.flatnonzero(mask):
                out[idx[j]] = f"{label}: {s} over {cap}"
            by_source[s] = [idx[j] for j in keep]
    return out


# --- contamination --------------------------------------------------------------------------------


def contamination(
    rows: Iterable[Row], params, *, benchmark_prompts: Iterable[str], benchmark_name: str = "benchmark"
) -> list[Reason]:
    """``benchmark_prompts``: the prompts of the benchmark dataset (``params.benchmark``), which the
    caller resolves."""
    p = r.step_validate(params)
    n = p.n
    grams: set[int] = set()
    firsts: set[str] = set()
    exact: set[bytes] = set()
    for prompt in benchmark_prompts:
        if p.exact:
            exact.add(hashlib.blake2b(normalise(prompt).encode(), digest_size=12).digest())
        toks = words(prompt)
        for i in range(len(toks) - n + 1):
            gram = tuple(toks[i : i + n])
            grams.add(hash(gram))
            firsts.add(gram[0])
    out: list[Reason] = []
    exact_reason = f"contaminated: exact prompt match with {benchmark_name}"
    gram_reason = f"contaminated: {n}-gram overlap with {benchmark_name}"
    for row in rows:
        prompt = row["prompt"]
        if exact and hashlib.blake2b(normalise(prompt).encode(), digest_size=12).digest() in exact:
            out.append(exact_reason)
            continue
        reason = None
        if grams:
            toks = words(prompt)
            for i in range(len(toks) - n + 1):
                if toks[i] in firsts and hash(tuple(toks[i : i + n])) in grams:
                    reason = gram_reason
                    break
        out.append(reason)
    return out


# --- reward-model steps ---------------------------------------------------------------------------


def _number(value) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def margin_filter(rows: Iterable[Row], params) -> list[Reason]:
    p = r.step_validate(params)
    out: list[Reason] = []
    for row in rows:
        m = _number(row.get("margin"))
        if m is None:
            out.append("unscored" if p.unscored == "drop" else None)
        else:
            out.append(f"margin {_fmt(m)} < {p.threshold:g}" if m < p.threshold else None)
    return out


def consistency(rows: Iterable[Row], params) -> list[Reason]:
    p = r.step_validate(params)
    sources = set(p.sources) if p.sources is not None else None
    out: list[Reason] = []
    for row in rows:
        if sources is not None and (row.get("source") or "") not in sources:
            out.append(None)
            continue
        m = _number(row.get("margin"))
        if m is None:
            out.append("inconsistent: unscored" if p.unscored == "drop" else None)
        elif m < 0:
            out.append("inconsistent: rm prefers rejected")
        elif m == 0:
            out.append("inconsistent: rm tie")
        else:
            out.append(None)
    return out


def _category_of(raw, p) -> str:
    """The fractions key a raw category falls under ("*" for the rest)."""
    text = "" if raw is None else str(raw)
    text = p.category_map.get(text, text)
    wanted = {k.strip().casefold(): k for k in p.fractions}
    return wanted.get(text.strip().casefold(), "*")


def top_slice(rows: Iterable[Row], params) -> list[Reason]:
    p = r.step_validate(params)
    sources = set(p.sources)
    out: list[Reason] = []
    groups: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for i, row in enumerate(rows):
        source = row.get("source") or ""
        out.append(None)
        if source not in sources:
            continue
        meta = row.get("metadata") or {}
        cat = _category_of(meta.get(p.category_key), p)
        if cat == "*" and "*" not in p.fractions:
            continue  # a category the recipe does not slice
        score = _number(row.get("score")) if p.checkpoint is not None else _number(meta.get(p.score_key))
        if score is None:
            out[i] = "top_slice: unscored"
            continue
        groups[cat].append((score - p.offsets.get(source, 0.0), i))
    for cat, members in groups.items():
        frac = p.fractions[cat]
        keep = math.ceil(frac * len(members) - 1e-9)
        members.sort(key=lambda t: (-t[0], t[1]))
        label = "other categories" if cat == "*" else cat
        reason = f"top_slice: below top {frac * 100:g}% of {label}"
        for _, i in members[keep:]:
            out[i] = reason
    return out


# --- registry -------------------------------------------------------------------------------------


@dataclass
class Needs:
    """What a step reads: pair columns, metadata keys, a checkpoint's scores, a benchmark's prompts."""

    columns: set[str] = field(default_factory=set)
    metadata_keys: set[str] = field(default_factory=set)
    checkpoint: int | None = None
    benchmark: int | None = None


def needs(params) -> Needs:
    p = r.step_validate(params)
    match p:
        case r.ExactDedup():
            return Needs({"prompt", "chosen_text"} if p.key == "prompt+chosen" else {"prompt"})
        case r.NearDedup():
            return Needs({"prompt"})
        case r.Length():
            cols = {"prompt_len"} if p.min_prompt is not None or p.max_prompt is not None else set()
            return Needs(cols | {"chosen_len", "rejected_len"})
        case r.LengthRatio():
            return Needs({"chosen_len", "rejected_len"})
        case r.NearIdentical():
            return Needs({"chosen_text", "rejected_text"})
        case r.SourceSelect():
            return Needs({"source"})
        case r.Contamination():
            return Needs({"prompt"}, benchmark=p.benchmark)
        case r.MarginFilter():
            return Needs(set(), checkpoint=p.checkpoint)
        case r.TopSlice():
            keys = {p.category_key} | ({p.score_key} if p.checkpoint is None else set())
            return Needs({"source"}, keys, checkpoint=p.checkpoint)
        case r.Consistency():
            return Needs({"source"}, checkpoint=p.checkpoint)
    raise ValueError(f"unknown step {p!r}")  # pragma: no cover


STEPS: dict[str, Callable[..., list[Reason]]] = {
    "exact_dedup": exact_dedup,
    "near_dedup": near_dedup,
    "length": length,
    "length_ratio": length_ratio,
    "near_identical": near_identical,
    "source_select": source_select,
    "contamination": contamination,
    "margin_filter": margin_filter,
    "top_slice": top_slice,
    "consistency": consistency,
}


def apply_step(params, rows: Iterable[Row], **context) -> list[Reason]:
    """Run one step (its function looked up in STEPS at call time)."""
    p = r.step_validate(params)
    return STEPS[p.step](rows, p, **context)


def run_steps(
    rows: list[Row], steps: Iterable, contexts: Mapping[int, dict] | None = None
) -> tuple[list[Reason], list[dict]]:
    """Apply ``steps`` in order to in-memory rows, each step to the rows still kept. Returns the
    reason of each row (None: kept) and per step {"step", "in", "dropped", "by_source"}.
    ``contexts[i]``: extra keyword arguments of step i (contamination's benchmark prompts)."""
    reasons: list[Reason] = [None] * len(rows)
    stats = []
    for i, params in enumerate(steps):
        p = r.step_validate(params)
        live = [j for j, reason in enumerate(reasons) if reason is None]
        result = apply_step(p, [rows[j] for j in live], **((contexts or {}).get(i) or {}))
        if len(result) != len(live):
            raise ValueError(f"step {p.step} returned {len(result)} results for {len(live)} rows")
        seen: Counter = Counter(str(rows[j].get("source") or "") for j in live)
        dropped: Counter = Counter()
        for j, reason in zip(live, result, strict=True):
            if reason:
                reasons[j] = reason
                dropped[str(rows[j].get("source") or "")] += 1
        stats.append(
            {
                "step": p.step,
                "in": len(live),
                "dropped": sum(dropped.values()),
                "by_source": {s: {"in": c, "dropped": dropped[s]} for s, c in sorted(seen.items())},
            }
        )
    return reasons, stats
