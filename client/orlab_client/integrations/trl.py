"""TRL's ``GRPOTrainer`` logging into orlab: its metrics, and its completions as samples.

    import orlab_client
    from orlab_client.integrations.trl import add_orlab_callback

    run = orlab_client.init(project="grpo-math", config=config)
    trainer = GRPOTrainer(model=..., reward_funcs=[correct, short], args=GRPOConfig(...), ...)
    add_orlab_callback(trainer, run)  # or: trainer.add_callback(OrlabCallback(run).attach(trainer))
    trainer.train()
    run.finish()

Metrics: every ``on_log`` sends the trainer's log dict at ``state.global_step``, keys named like
transformers' wandb callback does (``train/loss``, ``train/reward``, ``train/rewards/correct/mean``,
``train/completions/clipped_ratio``; ``eval_x`` becomes ``eval/x``).

Samples: TRL's callbacks do not receive the completions. ``GRPOTrainer`` keeps the latest
generation batch in ``trainer._logs`` (filled in ``GRPOTrainer._generate_and_score_completions``
under "Log prompts and completions": ``prompt``, ``completion``, ``rewards`` per reward function
name, ``advantages``, ``extra`` from reward functions' ``log_extra``; bounded deques of
``generation_batch_size``), which its own ``log`` turns into the wandb/trackio "completions" table
right after the callbacks' ``on_log``. So the callback holds a reference to the trainer
(``attach``) and reads ``trainer._logs`` in ``on_log``; a generation batch already sent (TRL reuses
one batch for ``steps_per_generation`` steps) is not sent again. Like TRL's table, only the latest
generation batch before each log is seen: with ``logging_steps`` larger than
``steps_per_generation`` the batches in between are never logged.

Each completion becomes one sample at ``state.global_step``:

- ``prompt``, ``completion``: the text (conversational messages rendered as ``role: content`` lines);
- ``reward``: the weighted sum over reward functions as GRPO uses it (``reward_weights``, NaN
  rewards skipped), ``None`` when every reward function returned None;
- ``advantage``: the group-normalised advantage from ``trainer._logs["advantages"]``;
- ``length`` and ``truncated``: TRL keeps neither per completion (only the aggregates
  ``completions/mean_length`` and ``completions/clipped_ratio``), so the completion text is
  re-tokenized with the trainer's tokenizer (no special tokens). TRL decodes completions without
  special tokens, so one that stopped at EOS comes back shorter than ``max_completion_length``:
  ``truncated`` is ``tokens >= max_completion_length`` and ``length`` counts the EOS of one that
  stopped (``tokens + 1``), as TRL's ``completions/mean_length`` does. Exact for tokenizers whose
  decode/encode round-trips and a policy that emits no other special tokens; an approximation
  otherwise (and for tool-calling completions);
- ``group_index``: the prompt group (completions of one prompt are ``num_generations`` consecutive
  entries of the batch, so the index of the group within the batch); ``member_index``: the index
  within the group; ``rewards``: ``{reward function name: value}``; ``phase``: ``train`` or
  ``eval``; ``finish_reason``: ``length`` when truncated, else ``stop``;
- ``extra``: ``source: "trl"`` and ``log_extra`` (the reward functions' extra columns, when any).

Only the main process logs (``state.is_world_process_zero``); TRL gathers every process's
completions there.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

from transformers import TrainerCallback

from orlab_client.client import Run
from orlab_client.sdk import ActiveRun, current

__all__ = ["OrlabCallback", "add_orlab_callback"]


class OrlabCallback(TrainerCallback):
    """Send a ``GRPOTrainer``'s metrics and completions to an orlab run.

    ``run``: the run of ``orlab_client.init`` (an ``ActiveRun``) or a ``Client.create_run`` run;
    without one, the current ``orlab_client.init`` run when training begins. ``log_samples``: also
    send the completions (needs ``attach(trainer)``; ``add_orlab_callback`` does both).
    The callback never finishes the run: the script does (``run.finish()`` or a ``with`` block);
    it flushes what it logged when training ends."""

    def __init__(self, run: ActiveRun | Run | None = None, *, log_samples: bool = True):
        self.run = run
        self.log_samples = log_samples
        self.trainer = None
        self._sent_batch: str | None = None

    def attach(self, trainer) -> OrlabCallback:
        """Remember ``trainer`` (the only way to reach its completions) and return the callback."""
        self.trainer = trainer
        return self

    # --- transformers' callback events ----------------------------------------------------------
    def on_train_begin(self, args, state, control, **kwargs):
        self._need_run()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero:
            return
        run = self._need_run()
        step = int(state.global_step)
        metrics = _metrics(logs or {})
        if metrics:
            _log(run, step, metrics)
        if self.log_samples and self.trainer is not None:
            samples = self.samples()
            if samples:
                _log_samples(run, step, samples)

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.run is not None:
            self.run.flush()

    # --- completions ------------------------------------------------------------------------------
    def samples(self) -> list[dict]:
        """The attached trainer's latest generation batch as orlab samples (see the module's
        docstring), or [] when there is none or it was already returned."""
        logs = getattr(self.trainer, "_logs", None)  # GRPOTrainer._generate_and_score_completions
        if not logs or not logs.get("prompt"):
            return []
        prompts = list(logs["prompt"])
        completions = list(logs["completion"])
        advantages = list(logs["advantages"])
        per_func = {name: list(values) for name, values in logs["rewards"].items()}
        columns = {name: list(values) for name, values in logs.get("extra", {}).items()}
        batch = hashlib.sha256(repr((prompts, completions, advantages, per_func)).encode()).hexdigest()
        if batch == self._sent_batch:
            return []  # the same generation batch, reused for several optimizer steps
        self._sent_batch = batch

        trainer = self.trainer
        training = bool(getattr(trainer.model, "training", True))
        group_size = int(
            getattr(trainer, "num_generations" if training else "num_generations_eval", None)
            or getattr(trainer, "num_generations", 1)
            or 1
        )
        weights = _weights(trainer, list(per_func))
        max_length = getattr(trainer, "max_completion_length", None)
        tokenizer = getattr(trainer, "_tokenizer", None) or getattr(trainer, "processing_class", None)
        tokenizer = getattr(tokenizer, "tokenizer", tokenizer)  # a processor wraps its tokenizer

        samples = []
        for i, prompt in enumerate(prompts[: len(completions)]):
            text = _text(completions[i])
            rewards = {name: _number(values[i]) for name, values in per_func.items() if i < len(values)}
            tokens = _token_count(tokenizer, text)
            truncated = bool(max_length) and tokens >= int(max_length)
            extra: dict[str, Any] = {"source": "trl"}
            row_columns = {name: values[i] for name, values in columns.items() if i < len(values)}
            if row_columns:
                extra["log_extra"] = _jsonable(row_columns)
            samples.append(
                {
                    "prompt": _text(prompt),
                    "completion": text,
                    "reward": _weighted(rewards, weights),
                    "advantage": _number(advantages[i]) if i < len(advantages) else None,
                    "length": tokens if truncated else tokens + 1,  # + the EOS it stopped at
                    "truncated": truncated,
                    "finish_reason": "length" if truncated else "stop",
                    "group_index": i // group_size,
                    "member_index": i % group_size,
                    "rewards": rewards,
                    "phase": "train" if training else "eval",
                    "extra": extra,
                }
            )
        return samples

    def _need_run(self):
        if self.run is None:
            self.run = current()
        if self.run is None:
            raise RuntimeError(
                "OrlabCallback has no run: pass one (OrlabCallback(run)) or call orlab_client.init() "
                "before training"
            )
        return self.run


def add_orlab_callback(
    trainer, run: ActiveRun | Run | None = None, *, log_samples: bool = True
) -> OrlabCallback:
    """Add an ``OrlabCallback`` attached to ``trainer`` (a TRL ``GRPOTrainer``) and return it."""
    callback = OrlabCallback(run, log_samples=log_samples).attach(trainer)
    trainer.add_callback(callback)
    return callback


# --- helpers ----------------------------------------------------------------------------------------
def _log(run, step: int, metrics: dict[str, float]) -> None:
    if isinstance(run, ActiveRun):
        run.log(metrics, step=step)
    else:
        run.log(step, metrics)


def _log_samples(run, step: int, samples: list[dict]) -> None:
    if isinstance(run, ActiveRun):
        run.log_samples(samples, step=step)
    else:
        run.log_samples(step, samples)


def _metrics(logs: dict) -> dict[str, float]:
    """transformers' wandb naming: ``eval_x`` -> ``eval/x``, ``test_x`` -> ``test/x``, else
    ``train/x``; only numbers (None, strings and lists are left out)."""
    out = {}
    for key, value in logs.items():
        number = _number(value)
        if number is None or isinstance(value, bool):
            continue
        if key.startswith("eval_"):
            name = "eval/" + key[len("eval_") :]
        elif key.startswith("test_"):
            name = "test/" + key[len("test_") :]
        else:
            name = "train/" + key
        out[name] = number
    return out


def _number(value) -> float | None:
    if hasattr(value, "item"):  # numpy / 0-d torch scalars
        try:
            value = value.item()
        except (ValueError, RuntimeError):
            return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = float(value)
        return value if math.isfinite(value) else None
    return None


def _weights(trainer, names: list[str]) -> dict[str, float]:
    """GRPO's reward weights per reward function name (``trainer.reward_weights`` follows
    ``trainer.reward_func_names``); 1.0 where unknown."""
    order = list(getattr(trainer, "reward_func_names", []) or [])
    raw = getattr(trainer, "reward_weights", None)
    values = raw.tolist() if hasattr(raw, "tolist") else list(raw or [])
    known = {order[j]: float(values[j]) for j in range(min(len(order), len(values)))}
    return {name: known.get(name, 1.0) for name in names}


def _weighted(rewards: dict[str, float | None], weights: dict[str, float]) -> float | None:
    scored = [(weights.get(name, 1.0), value) for name, value in rewards.items() if value is not None]
    if not scored:
        return None
    return sum(w * v for w, v in scored)


def _text(value) -> str:
    """A prompt or completion: plain text as is, conversational messages as ``role: content``
    lines (a completion of one assistant message: its content)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        value = [value]
    if isinstance(value, list):
        if len(value) == 1 and isinstance(value[0], dict) and value[0].get("role") == "assistant":
            return _content(value[0].get("content"))
        lines = []
        for message in value:
            if isinstance(message, dict):
                lines.append(f"{message.get('role', '')}: {_content(message.get('content'))}")
            else:
                lines.append(str(message))
        return "\n".join(lines)
    return str(value)


def _content(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # multimodal parts: keep the text ones
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return "" if content is None else str(content)


def _token_count(tokenizer, text: str) -> int:
    if tokenizer is None:
        return len(text)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, bool, int)):
        return value
    number = _number(value)
    return number if number is not None else str(value)
