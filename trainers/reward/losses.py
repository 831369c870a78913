"""Bradley-Terry loss and pair statistics: pure tensor functions (no model, no data).

Shapes: ``chosen`` and ``rejected`` are (pairs,) rewards of the two sides of the same pairs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bt_loss(
    chosen: torch.Tensor, rejected: torch.Tensor, margin: float | torch.Tensor | None = None
) -> torch.Tensor:
    """Mean over pairs of -log sigmoid(r_c - r_r - m), the negative log-likelihood of the preference
    under the Bradley-Terry model P(c > r) = sigmoid(r_c - r_r); ``margin`` m (a float, or one per pair)
    asks for a gap of at least about m. logsigmoid is the stable form (no overflow for large gaps)."""
    diff = chosen.float() - rejected.float()
    if margin is not None:
        diff = diff - margin
    return -F.logsigmoid(diff).mean()


def pair_accuracy(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """Fraction of pairs with r_c > r_r strictly (a tie counts as wrong, as in RewardBench)."""
    return (chosen > rejected).float().mean()


@torch.no_grad()
def pair_stats(chosen: torch.Tensor, rejected: torch.Tensor) -> dict[str, float]:
    """accuracy, margin_mean = mean(r_c - r_r), and mean/std (population) of each side."""
    chosen, rejected = chosen.detach().float(), rejected.detach().float()
    return {
        "accuracy": float(pair_accuracy(chosen, rejected)),
        "margin_mean": float((chosen - rejected).mean()),
        "chosen_reward_mean": float(chosen.mean()),
        "chosen_reward_std": float(chosen.std(correction=0)),
        "rejected_reward_mean": float(rejected.mean()),
        "rejected_reward_std": float(rejected.std(correction=0)),
    }
