"""Token-budget micro-batching and memory-lean log-probabilities.

Why: a long-CoT batch (hundreds of sequences of up to 32k tokens) cannot go through one forward, and
full-vocabulary float32 logits are the largest tensor of the update (one 10k-token sequence at a 152k
vocabulary is 6 GB per copy; log_softmax, its exp and the gradient each make another). So:

* :func:`split_by_token_budget` groups sequences of similar length into micro-batches whose padded size
  (rows x longest row) fits a token budget, as verl's dynamic batch size and TRL's padding-free
  batches do. The trainer accumulates gradients over them, weighting each micro-batch's loss so the
  sum equals the un-split loss (see each trainer's loss for its weighting).
* :func:`token_logprobs` runs the decoder once, keeps the hidden states of response positions only,
  and projects them through the LM head in chunks of rows. Each chunk keeps only its hidden states and
  log-sum-exp for the backward, which recomputes that chunk's logits and writes the softmax gradient
  in place (the fused linear + cross-entropy of Liger-Kernel and Apple's cut-cross-entropy, in plain
  torch): the peak is a couple of copies of one chunk's logits, whatever the batch, and the backward
  costs one more LM-head matmul but none of log_softmax's and entropy's autograd passes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

#: bytes of float32 logits one chunk may hold (plus the few same-size temporaries of log_softmax)
CHUNK_LOGIT_BYTES = 256 * 2**20


def split_by_token_budget(lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Indices of ``lengths`` grouped into micro-batches with ``rows x max(length) <= budget``.

    Sequences are taken longest first, so each micro-batch holds similar lengths (little padding); a
    sequence longer than the budget gets a micro-batch of its own. Within a micro-batch the indices are
    in ascending order. Deterministic for equal inputs."""
    if budget < 1:
        raise ValueError(f"budget must be >= 1, got {budget}")
    order = sorted(range(len(lengths)), key=lambda i: (-int(lengths[i]), i))
    groups: list[list[int]] = []
    current: list[int] = []
    widest = 0
    for i in order:
        length = max(1, int(lengths[i]))
        if current and max(widest, length) * (len(current) + 1) > budget:
            groups.append(sorted(current))
            current, widest = [], 0
        current.append(i)
        widest = max(widest, length)
    if current:
        groups.append(sorted(current))
    return groups


def decoder_and_head(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The transformer body (returns final-normed hidden states) and the LM head of a Hugging Face
    causal LM, also when wrapped (DeepSpeed's engine keeps it in ``.module``, DDP too)."""
    inner = model
    while not hasattr(inner, "get_output_embeddings") and hasattr(inner, "module"):
        inner = inner.module
    head = inner.get_output_embeddings()
    body = inner.get_decoder() if hasattr(inner, "get_decoder") else inner.model
    if head is None or body is None:
        raise TypeError(f"{type(inner).__name__} has no decoder/LM head pair")
    return body, head


def _chunk_rows(vocab: int) -> int:
    return max(1, CHUNK_LOGIT_BYTES // (4 * max(1, vocab)))


class _HeadLogprobs(torch.autograd.Function):
    """One chunk of response positions through the LM head: log pi(target) at ``temperature``, the
    full-vocabulary entropy (differentiable only with ``entropy_grad``) and whether the target is the
    argmax (no gradient). Saves the chunk's hidden states and log-sum-exp, not its logits; the
    backward recomputes the logits in the forward's compute dtype (bf16 under autocast) and turns
    them into their gradient in place:

        d logp_t / d z = onehot(t) - p,   d H / d z = -p * (log p + H),   z = logits / T."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, temperature, with_entropy, entropy_grad, with_hits):
        logits = torch.nn.functional.linear(hidden, weight, bias)  # autocast picks the compute dtype
        compute_dtype = logits.dtype
        z = logits.float().div_(temperature)
        del logits
        hits = z.argmax(-1) == targets if with_hits else torch.zeros_like(targets, dtype=torch.bool)
        lse = torch.logsumexp(z, -1)
        logp = z.gather(-1, targets[:, None]).squeeze(-1) - lse
        if with_entropy:
            logp_all = z.sub_(lse[:, None])
            entropy = -(logp_all.exp() * logp_all).sum(-1)
        else:
            entropy = torch.zeros_like(logp)
        del z
        entropy_grad = with_entropy and entropy_grad
        ctx.save_for_backward(hidden, weight, bias, targets, lse, entropy if entropy_grad else None)
        ctx.options = (temperature, compute_dtype, entropy_grad)
        ctx.mark_non_differentiable(hits)
        if not entropy_grad:
            ctx.mark_non_differentiable(entropy)
        return logp, entropy, hits

    @staticmethod
    def backward(ctx, grad_logp, grad_entropy, _grad_hits):
        hidden, weight, bias, targets, lse, entropy = ctx.saved_tensors
        temperature, dtype, entropy_grad = ctx.options
        h, w = hidden.to(dtype), weight.to(dtype)
        b = bias.to(dtype) if bias is not None else None
        logp_all = torch.nn.functional.linear(h, w, b).float().div_(temperature).sub_(lse[:, None])
        g = grad_logp.float()[:, None]
        if entropy_grad and grad_entropy is not None:
            coef = logp_all.add(entropy[:, None]).mul_(grad_entropy.float()[:, None]).add_(g)
            grad = logp_all.exp_().mul_(coef).neg_()
            del coef
        else:
            grad = logp_all.exp_().mul_(g).neg_()
        grad.scatter_add_(-1, targets[:, None], g)
        grad = grad.div_(temperature).to(dtype)
        need = ctx.needs_input_grad
        grad_hidden = (grad @ w).to(hidden.dtype) if need[0] else None
        grad_weight = (grad.t() @ h).to(weight.dtype) if need[1] else None
        grad_bias = grad.sum(0).to(bias.dtype) if bias is not None and need[2] else None
        return grad_hidden, grad_weight, grad_bias, None, None, None, None, None


def token_logprobs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    temperature: float = 1.0,
    with_entropy: bool = True,
    entropy_grad: bool = True,
    chunk_rows: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``log pi(x_{t+1} | x_{<=t}) `` and the full-vocabulary entropy at ``temperature``, shape (B, L-1),
    computed only where ``response_mask`` (B, L-1) is set; zero elsewhere.

    Equal (up to float rounding of the matmul order) to slicing ``model(...).logits`` and taking
    ``log_softmax``, without materialising (B, L, V) logits."""
    logp, entropy, _ = _response_stats(
        model, input_ids, attention_mask, response_mask, temperature=temperature,
        with_entropy=with_entropy, entropy_grad=entropy_grad, with_hits=False, chunk_rows=chunk_rows,
    )  # fmt: skip
    return logp, entropy


def token_logprobs_and_hits(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    chunk_rows: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`token_logprobs` at temperature 1 without entropy, plus a bool (B, L-1) tensor that is True
    where the target token is the argmax of the logits (SFT's token accuracy), in the same chunks."""
    logp, _, hits = _response_stats(
        model, input_ids, attention_mask, response_mask, temperature=1.0,
        with_entropy=False, entropy_grad=False, with_hits=True, chunk_rows=chunk_rows,
    )  # fmt: skip
    return logp, hits


def _response_stats(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    temperature: float,
    with_entropy: bool,
    entropy_grad: bool,
    with_hits: bool,
    chunk_rows: int | None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    body, head = decoder_and_head(model)
    positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    hidden = body(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, use_cache=False
    ).last_hidden_state[:, :-1]
    mask = response_mask.bool()
    selected = hidden[mask]  # (N, H): response positions only
    targets = input_ids[:, 1:][mask]
    rows = chunk_rows or _chunk_rows(head.weight.shape[0])
    logps, ents, hits = [], [], []
    for start in range(0, selected.shape[0], rows):
        lp, en, hit = _HeadLogprobs.apply(
            selected[start : start + rows], head.weight, head.bias, targets[start : start + rows],
            temperature, with_entropy, entropy_grad, with_hits,
        )  # fmt: skip
        logps.append(lp)
        ents.append(en)
        hits.append(hit)
    flat_logp = torch.cat(logps) if logps else hidden.new_zeros(0, dtype=torch.float32)
    out_logp = torch.zeros(mask.shape, dtype=torch.float32, device=hidden.device).masked_scatter(
        mask, flat_logp
    )
    out_ent = None
    if with_entropy:
        flat_ent = torch.cat(ents) if ents else flat_logp
        out_ent = torch.zeros(mask.shape, dtype=torch.float32, device=hidden.device).masked_scatter(
            mask, flat_ent
        )
    flat_hits = torch.cat(hits) if hits else targets.new_zeros(0, dtype=torch.bool)
    out_hits = torch.zeros(mask.shape, dtype=torch.bool, device=hidden.device).masked_scatter(mask, flat_hits)
    return out_logp, out_ent, out_hits
