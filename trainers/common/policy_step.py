"""Pieces of a policy update that several trainers share: the policy seen as its loss sees it
(:class:`PolicyLogprobs`, what DDP or DeepSpeed wraps) and the gradient-accumulation steppers of the torch
and DeepSpeed engines (:class:`TorchStepper`, :class:`DeepSpeedStepper`). The RL and DAPO updates and the
reward model's training step use them (moved here from trainers.rl.update)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from trainers.common import deepspeed_glue
from trainers.common.token_batching import token_logprobs


class PolicyLogprobs(nn.Module):
    """A causal LM seen as the loss sees it: ``forward`` returns the response positions' log-probs and
    entropies at a temperature (:func:`token_logprobs`), never the (B, L, V) logits. DeepSpeed wraps
    this module, so its engine's forward (and the backward hooks it registers) runs around exactly the
    computation the loss uses."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        response_mask: torch.Tensor,
        *,
        temperature: float,
        with_entropy: bool = True,
        entropy_grad: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        return token_logprobs(
            self.model, input_ids, attention_mask, response_mask,
            temperature=temperature, with_entropy=with_entropy, entropy_grad=entropy_grad,
        )  # fmt: skip


class TorchStepper:
    """Gradient accumulation and the optimizer step of the torch engine (clip by global norm)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, grad_clip: float):
        self.model, self.optimizer, self.grad_clip = model, optimizer, grad_clip

    def begin(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def backward(self, loss: torch.Tensor, last: bool) -> None:
        loss.backward()

    def step(self) -> float:
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        return float(norm)


class DeepSpeedStepper:
    """The same on a DeepSpeed engine: the boundary flag tells ZeRO when to reduce and step; the loss is
    already weighted for the whole mini-batch, so DeepSpeed must not divide it by its accumulation
    steps (``scale_wrt_gas=False``). The engine clips (its config) and zeroes the gradients itself."""

    def __init__(self, engine: Any):
        self.engine = engine

    def begin(self) -> None:
        pass

    def backward(self, loss: torch.Tensor, last: bool) -> None:
        self.engine.set_gradient_accumulation_boundary(last)
        self.engine.backward(loss, scale_wrt_gas=False)

    def step(self) -> float:
        self.engine.step()
        return deepspeed_glue.global_grad_norm(self.engine)
