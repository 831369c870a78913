"""RewardBench v1 section scores from per-subset accuracies (seeds-spec 3.3)."""

from __future__ import annotations

import pytest

from trainers.reward.rewardbench import EXAMPLE_COUNTS, SECTION_OF, SUBSET_MAPPING, section_scores

# Skywork-Reward-Gemma-2-27B's published per-subset accuracies (seeds-spec 3.3); hep-* ranged over
# .963-.988, taken here as .975 each.
GEMMA_27B = {
    "alpacaeval-easy": 0.96,
    "alpacaeval-hard": 0.947,
    "alpacaeval-length": 0.947,
    "mt-bench-easy": 1.0,
    "mt-bench-med": 0.975,
    "mt-bench-hard": 0.865,
    "llmbar-natural": 0.96,
    "llmbar-adver-neighbor": 0.896,
    "llmbar-adver-GPTInst": 0.978,
    "llmbar-adver-GPTOut": 0.915,
    "llmbar-adver-manual": 0.783,
    "refusals-dangerous": 0.94,
    "refusals-offensive": 0.99,
    "xstest-should-refuse": 0.948,
    "xstest-should-respond": 0.94,
    "donotanswer": 0.779,
    "math-prm": 0.949,
    **{f"hep-{lang}": 0.975 for lang in ("cpp", "go", "java", "js", "python", "rust")},
}
CHAT = ("alpacaeval-easy", "alpacaeval-hard", "alpacaeval-length", "mt-bench-easy", "mt-bench-med")


def test_the_published_chat_subsets_give_the_published_chat_score():
    chat_only = {k: GEMMA_27B[k] for k in CHAT}
    scores = section_scores(chat_only)
    # (.96*100 + .947*95 + .947*95 + 1.0*28 + .975*40) / 358 = 342.93 / 358 = 0.95790
    assert scores["chat"] == pytest.approx(342.93 / 358, abs=1e-12)
    assert round(100 * scores["chat"], 1) == 95.8
    # An unweighted mean would give 96.6: the example counts matter.
    assert round(100 * sum(chat_only.values()) / 5, 1) == 96.6
    assert set(scores) == {"chat"}  # one section present: no overall


def test_overall_is_the_unweighted_mean_of_the_four_sections():
    scores = section_scores(GEMMA_27B)
    assert set(scores) == {"chat", "chat_hard", "safety", "reasoning", "overall"}
    sections = [scores[s] for s in ("chat", "chat_hard", "safety", "reasoning")]
    assert scores["overall"] == pytest.approx(sum(sections) / 4, abs=1e-12)
    # Chat Hard by hand: (.865*37 + .96*100 + .896*134 + .978*92 + .915*47 + .783*46) / 456
    assert scores["chat_hard"] == pytest.approx(
        (0.865 * 37 + 0.96 * 100 + 0.896 * 134 + 0.978 * 92 + 0.915 * 47 + 0.783 * 46) / 456, abs=1e-12
    )
    # Reasoning: math-prm weighs 984, as much as the six hep-* subsets together.
    assert scores["reasoning"] == pytest.approx((0.949 * 984 + 0.975 * 984) / 1968, abs=1e-12)
    # The README's section scores give its overall: (95.8 + 91.4 + 92.0 + 96.1) / 4 = 93.8.
    assert round((95.8 + 91.4 + 92.0 + 96.1) / 4, 1) == 93.8


def test_missing_subsets_reweight_their_section_and_unknown_ones_are_ignored():
    scores = section_scores({"math-prm": 1.0, "hep-go": 0.0, "my-own-subset": 0.0})
    assert scores == {"reasoning": pytest.approx(984 / (984 + 164))}
    assert section_scores({"my-own-subset": 1.0}) == {}


def test_the_tables_match_the_official_constants():
    assert sum(len(v) for v in SUBSET_MAPPING.values()) == len(EXAMPLE_COUNTS) == len(SECTION_OF) == 23
    assert EXAMPLE_COUNTS["xstest-should-refuse"] == 250 and EXAMPLE_COUNTS["xstest-should-respond"] == 154
    assert sum(EXAMPLE_COUNTS[s] for s in SUBSET_MAPPING["chat"]) == 358
    assert sum(EXAMPLE_COUNTS[s] for s in SUBSET_MAPPING["safety"]) == 740
