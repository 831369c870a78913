"""Turning grouped completions into training tensors, and the log-probs/entropies of a policy on them."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class RolloutBatch:
    input_ids: torch.Tensor  # (B, L) prompt + completion, right-padded
    attention_mask: torch.Tensor  # (B, L)
    response_mask: torch.Tensor  # (B, L-1) 1 where position t predicts a completion token
    targets: torch.Tensor  # (B, L-1) the token predicted at each position

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def select(self, index) -> RolloutBatch:
        return RolloutBatch(
            self.input_ids[index], self.attention_mask[index], self.response_mask[index], self.targets[index]
        )

    def lengths(self) -> list[int]:
        """Prompt + response tokens of every row (what a micro-batch's token budget counts)."""
        return self.attention_mask.sum(-1).tolist()

    def narrow(self, rows: list[int]) -> RolloutBatch:
        """The rows ``rows`` cut to the longest of them (right padding beyond it is dropped)."""
        index = torch.tensor(rows, device=self.input_ids.device)
        width = max(1, int(self.attention_mask[index].sum(-1).max()))
        return RolloutBatch(
            self.input_ids[index, :width],
            self.attention_mask[index, :width],
            self.response_mask[index, : width - 1],
            self.targets[index, : width - 1],
        )

    def to(self, device: torch.device) -> RolloutBatch:
        return RolloutBatch(*(t.to(device) for t in (self.input_ids, self.attention_mask,
                                                      self.response_mask, self.targets)))  # fmt: skip


def build_batch(sequences: list[tuple[list[int], list[int]]], pad_id: int) -> RolloutBatch:
    """sequences: (prompt ids, completion ids) pairs. Completion tokens (including a final EOS when
    sampled) are the ones the loss sees."""
    width = max(len(p) + len(c) for p, c in sequences)
    B = len(sequences)
    ids = torch.full((B, width), pad_id, dtype=torch.long)
    attn = torch.zeros((B, width), dtype=torch.long)
    resp = torch.zeros((B, width), dtype=torch.float32)
    for i, (p, c) in enumerate(sequences):
        n = len(p) + len(c)
        ids[i, :n] = torch.tensor(p + c)
        attn[i, :n] = 1
        resp[i, len(p) : n] = 1.0
    # position t predicts token t+1
    return RolloutBatch(ids, attn, resp[:, 1:], ids[:, 1:])


def logprobs_and_entropy(
    model, batch: RolloutBatch, temperature: float, with_entropy: bool = True, entropy_grad: bool = True
):
    """Per-position log pi(target) and full-vocabulary entropy, both at ``temperature`` (the sampling
    distribution), shape (B, L-1). ``entropy_grad=False`` computes the entropy outside the autograd
    graph: for metrics only (an entropy bonus of 0), backward then skips its vocabulary-wide terms."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1].float()
    logits = logits / temperature
    logp_all = torch.log_softmax(logits, dim=-1)
    logp = logp_all.gather(-1, batch.targets.unsqueeze(-1)).squeeze(-1)
    entropy = None
    if with_entropy:
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy
