"""A reward model's held-out accuracies carry 95 % bootstrap intervals over pairs (issue 15 points 5-6):
``accuracy_ci``, ``subset/<source>_ci`` and the RewardBench ``section/<id>_ci`` / ``overall_ci``, as a
policy's pass@k carries its own; they bracket the number and cover the true accuracy at about 95 %."""

import torch

from trainers.reward.evaluation import accuracy_intervals, eval_metrics
from trainers.reward.rewardbench import SUBSET_MAPPING


def scores(correct: list[bool]) -> tuple[torch.Tensor, torch.Tensor]:
    chosen = torch.tensor([1.0 if ok else -1.0 for ok in correct])
    return chosen, torch.zeros(len(correct))


def test_every_accuracy_gets_an_interval_around_it():
    gen = torch.Generator().manual_seed(1)
    sections = [subsets[0] for subsets in SUBSET_MAPPING.values()]  # one subset of each: overall exists
    sources = [sections[i % 4] for i in range(200)] + ["mine"] * 40
    correct = (torch.rand(240, generator=gen) < 0.7).tolist()
    chosen, rejected = scores(correct)
    metrics = {k.removeprefix("eval/"): v for k, v in eval_metrics(chosen, rejected, sources, None).items()}
    intervals = accuracy_intervals(chosen, rejected, sources)
    named = [k for k in metrics if k not in ("loss", "margin_mean")]
    assert {f"{k}_ci" for k in named} == set(intervals)
    assert "overall_ci" in intervals and "subset/mine_ci" in intervals
    for name in named:
        lo, hi = intervals[f"{name}_ci"]
        assert lo <= metrics[name] <= hi and hi - lo < 0.5, name
    assert accuracy_intervals(chosen, rejected, sources) == intervals  # fixed seed: the same band


def test_the_accuracy_interval_covers_the_truth_about_95_percent():
    gen = torch.Generator().manual_seed(7)
    truth, covered, sims = 0.7, 0, 200
    threads = torch.get_num_threads()
    torch.set_num_threads(
        1
    )  # tensors of a few thousand elements: thread hand-offs cost 10x on a busy machine
    try:
        for _ in range(sims):
            correct = (torch.rand(150, generator=gen) < truth).tolist()
            lo, hi = accuracy_intervals(*scores(correct), [""] * 150, resamples=400)["accuracy_ci"]
            covered += lo <= truth <= hi
    finally:
        torch.set_num_threads(threads)
    assert 0.88 * sims <= covered <= 0.99 * sims, covered
