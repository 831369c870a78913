"""SFT: next-token cross-entropy on the solution tokens of (prompt, solution) pairs.

    python -m trainers.sft --config cfg.yaml

The CPU demo trains the tiny model on generated arithmetic until its greedy accuracy is clearly
above zero but far from perfect: the starting point the RL and DAPO demos improve on, as the
distilled models are for OR1."""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

import torch

from trainers.base import Sink
from trainers.common.models import load_policy, seed_everything
from trainers.common.rollout import TorchSampler
from trainers.common.tiny import build_tiny_model, is_char_tokenizer_dir, mark_char_tokenizer
from trainers.common.verifiers.math import verify_math
from trainers.sft.config import SFTConfig
from trainers.sft.data import Example, generated, read_problems


def resolve_model_path(model_path: str, workdir: Path, seed: int) -> Path:
    if model_path == "tiny":
        target = workdir / "tiny-init"
        if not (target / "config.json").exists():
            build_tiny_model(target, seed=seed)
        return target
    return Path(model_path)


def encode_example(tokenizer, ex: Example, max_length: int) -> tuple[list[int], list[int]]:
    """(input ids, labels) with labels -100 on the prompt: only the solution (and EOS) is learned."""
    prompt = tokenizer.encode(ex.prompt)
    target = tokenizer.encode(ex.solution) + [tokenizer.eos_token_id]
    ids = (prompt + target)[:max_length]
    labels = ([-100] * len(prompt) + target)[:max_length]
    return ids, labels


def collate(batch: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), pad_id)
    labels = torch.full((len(batch), width), -100)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, (x, y) in enumerate(batch):
        ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(y)] = torch.tensor(y)
        mask[i, : len(x)] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def lm_loss(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean token cross-entropy over labelled positions, and the token accuracy."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    valid = labels != -100
    loss = torch.nn.functional.cross_entropy(logits[valid], labels[valid])
    acc = (logits[valid].argmax(-1) == labels[valid]).float().mean()
    return loss, acc


@torch.no_grad()
def greedy_accuracy(model, tokenizer, problems: list[Example], max_new_tokens: int) -> float:
    """Share of problems whose greedy completion the math verifier accepts."""
    was_training = model.training
    model.eval()
    sampler = TorchSampler(model, tokenizer, batch_size=64)
    outs = sampler.generate([p.prompt for p in problems], n=1, temperature=0.0, max_new_tokens=max_new_tokens)
    correct = sum(
        verify_math(o[0].completion_text, p.answer).reward for o, p in zip(outs, problems, strict=True)
    )
    model.train(was_training)
    return correct / max(1, len(problems))


def lr_at(step: int, cfg: SFTConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def save_policy(sink: Sink, step: int, model, tokenizer, char_tokenizer: bool) -> Path:
    """Write a loadable model directory (weights, config, tokenizer) for checkpoint ``step``."""
    directory = sink.checkpoint_dir(step)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    if char_tokenizer:
        mark_char_tokenizer(directory)  # so load_policy keeps the char tokenizer (see models.py)
    return directory


def _save(sink: Sink, step: int, model, tokenizer, optimizer, metrics: dict, char_tokenizer: bool) -> None:
    directory = save_policy(sink, step, model, tokenizer, char_tokenizer)
    torch.save({"optimizer": optimizer.state_dict(), "step": step}, directory / "trainer_state.pt")
    (directory / "orlab.json").write_text(json.dumps({"kind": "sft", "step": step}))
    sink.save_checkpoint(step, directory, metrics)


def train(cfg: SFTConfig, sink: Sink) -> dict:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    if sink.resume_from is not None:
        model_dir = Path(sink.resume_from)
    else:
        model_dir = resolve_model_path(cfg.model_path, Path(sink.workdir), cfg.seed)
    model, tokenizer = load_policy(model_dir)
    char_tok = is_char_tokenizer_dir(model_dir)
    model.train()

    if cfg.train_dataset is None:
        train_set, eval_set = generated(
            cfg.generated_train, cfg.generated_eval, cfg.seed, cfg.generated_slip_fraction
        )
    else:
        train_set = read_problems(cfg.train_dataset, need_solution=True)
        eval_set = read_problems(cfg.eval_dataset, need_solution=False) if cfg.eval_dataset else []
    if cfg.eval_dataset is not None and cfg.train_dataset is None:
        eval_set = read_problems(cfg.eval_dataset, need_solution=False)
    encoded = [encode_example(tokenizer, ex, cfg.max_length) for ex in train_set]

    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start = 0
    if sink.resume_from is not None and (Path(sink.resume_from) / "trainer_state.pt").exists():
        state = torch.load(Path(sink.resume_from) / "trainer_state.pt", weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        start = state["step"] + 1

    rng = random.Random(cfg.seed)
    order: list[int] = []
    # Data order depends only on (seed, step): a resumed run sees the batches it would have seen.
    for _ in range(start):
        order = _next_batch(order, rng, len(encoded), cfg.batch_size)[1]
    if start == 0 and cfg.eval_every:
        acc = greedy_accuracy(model, tokenizer, eval_set, cfg.max_new_tokens) if eval_set else float("nan")
        sink.log(0, {"eval/accuracy": acc})
    step = start
    for step in range(start, cfg.steps):
        if sink.should_stop():
            if not cfg.checkpoint_every or step % cfg.checkpoint_every != 0:  # else just saved
                _save(sink, step - 1, model, tokenizer, optimizer, {}, char_tok)
            return {"stopped": True, "step": step - 1}
        tic = time.perf_counter()
        idx, order = _next_batch(order, rng, len(encoded), cfg.batch_size)
        batch = collate([encoded[i] for i in idx], tokenizer.pad_token_id)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        loss, tok_acc = lm_loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        tokens = int(batch["attention_mask"].sum())
        metrics = {
            "train/loss": loss.item(),
            "train/token_accuracy": tok_acc.item(),
            "train/grad_norm": float(grad_norm),
            "train/lr": lr_at(step, cfg),
            "train/tokens_per_s": tokens / (time.perf_counter() - tic),
        }
        last = step == cfg.steps - 1
        if eval_set and ((cfg.eval_every and (step + 1) % cfg.eval_every == 0) or last):
            metrics["eval/accuracy"] = greedy_accuracy(model, tokenizer, eval_set, cfg.max_new_tokens)
        sink.log(step + 1, metrics)
        if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 and not last:
            _save(sink, step, model, tokenizer, optimizer, {"train/loss": metrics["train/loss"]}, char_tok)
    final = {"train/loss": metrics["train/loss"]} if cfg.steps > start else {}
    if "eval/accuracy" in (metrics if cfg.steps > start else {}):
        final["eval/accuracy"] = metrics["eval/accuracy"]
    _save(sink, step, model, tokenizer, optimizer, final, char_tok)
    return {"stopped": False, "step": step, **final}


def _next_batch(order: list[int], rng: random.Random, n: int, size: int) -> tuple[list[int], list[int]]:
    if len(order) < size:
        fresh = list(range(n))
        rng.shuffle(fresh)
        order = order + fresh
    return order[:size], order[size:]
