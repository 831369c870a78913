"""The curation steps as pure functions: each on small rows built to trigger it and not to, and the
in-memory runner (steps in order, each on the pairs still kept)."""

import numpy as np
import pytest

from webapp.datasets.curation import steps as st


def row(i, prompt="p", chosen="a good answer", rejected="a bad reply", source="s", **extra):
    r = {
        "id": 1000 + i,
        "row": i,
        "prompt": prompt,
        "chosen_text": chosen,
        "rejected_text": rejected,
        "chosen_len": len(chosen),
        "rejected_len": len(rejected),
        "source": source,
        "metadata": extra.pop("metadata", {}),
    }
    r.update(extra)
    return r


def rows_of(prompts, **kw):
    return [row(i, p, **kw) for i, p in enumerate(prompts)]


LONG = (
    "Write a detailed essay about the history of the printing press in Europe, covering Gutenberg, "
    "the spread of movable type, and its effect on literacy and the Reformation"
)


# --- exact_dedup ------------------------------------------------------------------------------


def test_exact_dedup_normalises_case_and_whitespace():
    rows = rows_of(["What is 2+2?", "what  is 2+2? ", "What is 2+3?", "WHAT IS 2+2?"])
    assert st.exact_dedup(rows, {"step": "exact_dedup"}) == [None, "exact_duplicate", None, "exact_duplicate"]


def test_exact_dedup_on_prompt_and_chosen_keeps_different_answers():
    rows = [row(0, "Q", chosen="A"), row(1, "q", chosen="B"), row(2, "Q ", chosen="a")]
    assert st.exact_dedup(rows, {"step": "exact_dedup", "key": "prompt+chosen"}) == [
        None,
        None,
        "exact_duplicate",
    ]
    assert st.exact_dedup(rows, {"step": "exact_dedup"}) == [None, "exact_duplicate", "exact_duplicate"]


# --- near_dedup ---------------------------------------------------------------------------------


def test_near_dedup_drops_near_copies_and_names_the_kept_row():
    rows = rows_of(
        [
            LONG,
            "Explain how a refrigerator moves heat from inside to outside using a compressor and refrigerant",
            LONG + " please",  # one extra word: Jaccard of 5-shingles ~0.96
            LONG.replace("Europe", "Europe,"),  # punctuation only: same words
            "What is 1 plus 1?",
            "What is 2 plus 2?",  # short and different: not a duplicate
        ]
    )
    rows[2]["row"] = 17
    rows[0]["row"] = 7
    assert st.near_dedup(rows, {"step": "near_dedup", "threshold": 0.8}) == [
        None,
        None,
        "near_duplicate of row 7",
        "near_duplicate of row 7",
        None,
        None,
    ]


def test_near_dedup_keeps_merely_similar_prompts():
    a = "Describe the water cycle including evaporation condensation precipitation and collection in detail"
    b = "Describe the carbon cycle including photosynthesis respiration decomposition and combustion in detail"
    assert st.near_dedup(rows_of([a, b]), {"step": "near_dedup", "threshold": 0.8}) == [None, None]


def test_near_dedup_clusters_transitively_and_keeps_the_first():
    base = [f"word{i}" for i in range(60)]
    v1 = " ".join(base)
    v2 = " ".join(base[:58] + ["x", "y"])  # close to v1
    v3 = " ".join(base[:56] + ["x", "y", "z", "w"])  # close to v2
    out = st.near_dedup(rows_of([v3, v2, v1]), {"step": "near_dedup", "threshold": 0.8})
    assert out == [None, "near_duplicate of row 0", "near_duplicate of row 0"]


def test_minhash_signature_equals_datasketch():
    from datasketch import MinHash

    hasher = st.MinHasher(num_perm=64, seed=3, shingle=4)
    text = "The quick brown fox jumps over the lazy dog while the cat watches from the fence"
    hv = hasher.shingle_hashes(text)
    ref = MinHash(num_perm=64, seed=3, hashfunc=lambda x: x)
    ref.update_batch([int(h) for h in hv])
    assert np.array_equal(ref.hashvalues, hasher.signature(text))
    # and the estimated Jaccard of two texts tracks the exact one
    other = text.replace("lazy", "sleepy")
    sa, sb = set(hasher.shingle_hashes(text).tolist()), set(hasher.shingle_hashes(other).tolist())
    est = float(np.mean(hasher.signature(text) == hasher.signature(other)))
    assert abs(est - len(sa & sb) / len(sa | sb)) < 0.25


def test_near_dedup_of_empty_and_wordless_prompts_keeps_them():
    assert st.near_dedup(rows_of(["!!!", "???", "ok"]), {"step": "near_dedup"}) == [None, None, None]
    assert st.near_dedup([], {"step": "near_dedup"}) == []


# --- length, length_ratio, near_identical ----------------------------------------------------------


def test_length_bounds_name_the_part_and_bound():
    rows = [
        row(0, "short prompt", chosen="x" * 50),
        row(1, "p", chosen="x" * 5000),
        row(2, "a prompt", chosen="x" * 50, rejected="y"),
        row(3, "", chosen="x" * 50),
    ]
    params = {"step": "length", "min_prompt": 1, "max_chosen": 4000, "min_rejected": 2}
    assert st.length(rows, params) == [
        None,
        "length: chosen > 4000",
        "length: rejected < 2",
        "length: prompt < 1",
    ]
    assert st.length(rows, {"step": "length", "max_chosen": 10000}) == [None] * 4


def test_length_uses_a_precomputed_prompt_length():
    assert st.length([row(0, "p", prompt_len=99)], {"step": "length", "max_prompt": 50}) == [
        "length: prompt > 50"
    ]


def test_length_ratio():
    rows = [
        row(0, chosen="x" * 100, rejected="y" * 80),
        row(1, chosen="x" * 320, rejected="y" * 100),
        row(2, chosen="x" * 10, rejected="y" * 100),
    ]
    assert st.length_ratio(rows, {"step": "length_ratio", "max_ratio": 2.5}) == [
        None,
        "length_ratio 3.2 > 2.5",
        "length_ratio 10 > 2.5",
    ]


def test_near_identical_by_shingle_jaccard():
    base = " ".join(f"token{i}" for i in range(40))
    rows = [
        row(0, chosen=base, rejected=base + " end"),  # 38 of 39 shingles shared
        row(1, chosen="The answer is four.", rejected="I do not know the answer at all."),
        row(2, chosen="Yes.", rejected="yes!"),  # no shingle of 3 words: whole-word set
    ]
    out = st.near_identical(rows, {"step": "near_identical", "threshold": 0.9})
    assert out[0] == "near_identical (0.97)" and out[1] is None and out[2] == "near_identical (1.00)"
    assert st.near_identical(rows[:1], {"step": "near_identical", "threshold": 0.99}) == [None]
    assert st.jaccard("a b c d", "a b c e", k=1) == pytest.approx(3 / 5)


# --- source_select ------------------------------------------------------------------------------


def test_source_select_include_list():
    rows = [row(i, source=s) for i, s in enumerate(["a", "b", "c", "a", ""])]
    assert st.source_select(rows, {"step": "source_select", "include": ["a", "c"]}) == [
        None,
        "source_not_selected",
        None,
        None,
        "source_not_selected",
    ]


def test_source_select_caps_are_a_seeded_sample():
    rows = [row(i, source="big" if i < 10 else "small") for i in range(13)]
    params = {"step": "source_select", "caps": {"big": 4}, "seed": 7}
    out = st.source_select(rows, params)
    assert sum(o is None for o in out[:10]) == 4 and out[10:] == [None] * 3
    assert {o for o in out if o} == {"source_cap: big over 4"}
    assert st.source_select(rows, params) == out  # same seed, same sample
    others = [st.source_select(rows, {**params, "seed": s}) for s in range(5)]
    assert any(o != out for o in others)


def test_source_select_mix_ratios_with_a_total():
    rows = [row(i, source=s) for i, s in enumerate(["a"] * 20 + ["b"] * 20 + ["c"] * 3 + ["d"] * 5)]
    out = st.source_select(rows, {"step": "source_select", "mix": {"a": 2, "b": 1, "c": 1}, "total": 12})
    kept = [r["source"] for r, o in zip(rows, out, strict=True) if o is None]
    assert kept.count("a") == 6 and kept.count("b") == 3 and kept.count("c") == 3 and "d" not in kept
    assert "source_mix: a over 6" in out and "source_not_selected" in out
    assert st._quotas({"x": 1, "y": 1, "z": 1}, 10) == {"x": 4, "y": 3, "z": 3}


# --- contamination ------------------------------------------------------------------------------

BENCH = [
    "Alice has three apples and buys five more at the market on Sunday morning how many apples does she have",
    "Name the capital of France.",
]


def test_contamination_by_ngram_and_exact_prompt():
    rows = rows_of(
        [
            "Please solve: Alice has three apples and buys five more at the market on Sunday morning thanks",
            "name the capital of   FRANCE.",
            "I know that Alice has three apples and buys five more at the store",  # a 10-gram only
            "What is the capital of Spain?",
        ]
    )
    out = st.contamination(
        rows, {"step": "contamination", "benchmark": 1}, benchmark_prompts=BENCH, benchmark_name="rb v1"
    )
    assert out == [
        "contaminated: 13-gram overlap with rb v1",
        "contaminated: exact prompt match with rb v1",
        None,
        None,
    ]
    out8 = st.contamination(
        rows, {"step": "contamination", "benchmark": 1, "n": 8, "exact": False}, benchmark_prompts=BENCH
    )
    assert out8 == [
        "contaminated: 8-gram overlap with benchmark",
        None,
        "contaminated: 8-gram overlap with benchmark",
        None,
    ]


# --- reward-model steps ---------------------------------------------------------------------------


def test_margin_filter_and_unscored_flag():
    rows = [row(0, margin=2.0), row(1, margin=0.1), row(2, margin=None), row(3)]
    assert st.margin_filter(rows, {"step": "margin_filter", "checkpoint": 1, "threshold": 0.5}) == [
        None,
        "margin 0.1 < 0.5",
        "unscored",
        "unscored",
    ]
    keep = {"step": "margin_filter", "checkpoint": 1, "threshold": 0.5, "unscored": "keep"}
    assert st.margin_filter(rows, keep) == [None, "margin 0.1 < 0.5", None, None]


def test_consistency_only_on_the_listed_sources():
    rows = [
        row(0, source="wildguard", margin=1.5),
        row(1, source="wildguard", margin=-0.2),
        row(2, source="wildguard", margin=0.0),
        row(3, source="helpsteer2", margin=-3.0),
        row(4, source="wildguard", margin=None),
    ]
    params = {"step": "consistency", "checkpoint": 1, "sources": ["wildguard"]}
    assert st.consistency(rows, params) == [
        None,
        "inconsistent: rm prefers rejected",
        "inconsistent: rm tie",
        None,
        "inconsistent: unscored",
    ]
    assert (
        st.consistency(rows, {"step": "consistency", "checkpoint": 1})[3]
        == "inconsistent: rm prefers rejected"
    )


def test_top_slice_per_category_with_source_offsets():
    def m(i, source, cat, score):
        return row(i, source=source, metadata={"category": cat, "score": score})

    rows = [
        m(0, "magpie_ultra", "Math", 0.90),
        m(1, "magpie_air", "Math", 0.95),  # 0.85 after the Air offset: ranks below row 0
        m(2, "magpie_ultra", "Math", 0.50),
        m(3, "magpie_ultra", "Math", 0.40),
        m(4, "magpie_ultra", "Information seeking", 0.99),
        m(5, "magpie_ultra", "Creative writing", 0.10),
        m(6, "magpie_ultra", "Advice", 0.20),
        m(7, "helpsteer2", "Math", 0.0),  # not a listed source: untouched
        m(8, "magpie_ultra", "Math", None),
    ]
    params = {
        "step": "top_slice",
        "sources": ["magpie_ultra", "magpie_air"],
        "fractions": {"math": 0.25, "*": 0.3},
        "offsets": {"magpie_air": 0.1},
    }
    assert st.top_slice(rows, params) == [
        None,
        "top_slice: below top 25% of math",
        "top_slice: below top 25% of math",
        "top_slice: below top 25% of math",
        None,  # best of the 3 pooled other categories
        "top_slice: below top 30% of other categories",
        "top_slice: below top 30% of other categories",
        None,
        "top_slice: unscored",
    ]
    without_offset = st.top_slice(rows, {**params, "offsets": {}})
    assert without_offset[1] is None and without_offset[0] is not None
    # a category not in fractions and no "*": left alone
    only_math = st.top_slice(rows, {**params, "fractions": {"math": 0.25}})
    assert only_math[4:7] == [None, None, None]


def test_top_slice_from_a_checkpoint_score_and_category_map():
    rows = [
        row(i, source="mp", metadata={"category": "Coding & Debugging"}, score=float(s))
        for i, s in enumerate([3, 1, 2, 5, 4, 0, 6, 7, 8, 9])
    ]
    params = {
        "step": "top_slice",
        "sources": ["mp"],
        "checkpoint": 5,
        "category_map": {"Coding & Debugging": "code"},
        "fractions": {"code": 0.3},
    }
    out = st.top_slice(rows, params)
    assert [i for i, o in enumerate(out) if o is None] == [7, 8, 9]
    assert out[0] == "top_slice: below top 30% of code"


# --- order ------------------------------------------------------------------------------------------


def test_steps_apply_in_order_to_the_pairs_still_kept():
    rows = [
        row(0, "Same prompt", chosen="x" * 10),
        row(1, "same prompt", chosen="x" * 9000),
        row(2, "Other prompt", chosen="x" * 9000),
    ]
    dedup_first = [{"step": "exact_dedup"}, {"step": "length", "max_chosen": 4000}]
    reasons, stats = st.run_steps(rows, dedup_first)
    assert reasons == [None, "exact_duplicate", "length: chosen > 4000"]
    assert [(s["in"], s["dropped"]) for s in stats] == [(3, 1), (2, 1)]
    # the other order: the long duplicate is dropped by length, so dedup sees only one "same prompt"
    reasons, stats = st.run_steps(rows, dedup_first[::-1])
    assert reasons == [None, "length: chosen > 4000", "length: chosen > 4000"]
    assert [(s["in"], s["dropped"]) for s in stats] == [(3, 2), (1, 0)]
    assert stats[0]["by_source"] == {"s": {"in": 3, "dropped": 2}}


def test_a_step_returning_the_wrong_count_is_an_error(monkeypatch):
    monkeypatch.setitem(st.STEPS, "exact_dedup", lambda rows, p: [None])
    with pytest.raises(ValueError, match="returned 1 results for 2 rows"):
        st.run_steps([row(0), row(1)], [{"step": "exact_dedup"}])


def test_steps_accept_a_one_pass_iterator():
    gen = (row(i, f"prompt {i % 3}") for i in range(6))
    assert st.exact_dedup(gen, {"step": "exact_dedup"}) == [None] * 3 + ["exact_duplicate"] * 3
