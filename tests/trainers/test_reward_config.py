"""RewardConfig validation, its schema (descriptions, dataset pickers) and the registered spec."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from trainers.base import get_spec
from trainers.reward.config import RewardConfig


def test_defaults_and_required_fields():
    cfg = RewardConfig.model_validate({"train_dataset": "pairs.jsonl"})
    assert (cfg.model_path, cfg.head, cfg.lr, cfg.scheduler, cfg.engine, cfg.margin) == (
        "tiny",
        "seq_cls",
        2e-6,
        "cosine",
        "torch",
        None,
    )
    assert cfg.eval_dataset is None
    with pytest.raises(ValidationError) as exc:
        RewardConfig.model_validate({})
    assert [e["loc"] for e in exc.value.errors()] == [("train_dataset",)]


@pytest.mark.parametrize(
    "field, value",
    [("lr", 0.0), ("lr", float("nan")), ("head", "mlp"), ("zero_stage", 4), ("batch_size", 0), ("scheduler", "linear"),
     ("engine", "fsdp"), ("max_length", 4), ("warmup_ratio", 1.5), ("margin", float("inf")), ("model_path", "")],
)  # fmt: skip
def test_bad_values_are_reported_at_their_field(field, value):
    with pytest.raises(ValidationError) as exc:
        RewardConfig.model_validate({"train_dataset": "p.jsonl", field: value})
    assert {e["loc"][0] for e in exc.value.errors()} == {field}


def test_unknown_keys_are_errors():
    with pytest.raises(ValidationError, match="learning_rate"):
        RewardConfig.model_validate({"train_dataset": "p.jsonl", "learning_rate": 1e-5})


def test_every_field_is_described_and_the_datasets_are_preference_pickers():
    schema = RewardConfig.model_json_schema()
    undescribed = [name for name, prop in schema["properties"].items() if not prop.get("description")]
    assert undescribed == []
    assert schema["properties"]["train_dataset"]["x-orlab-dataset"] == "preference"
    assert schema["properties"]["eval_dataset"]["x-orlab-dataset"] == "preference"
    assert "not a value from the paper" in schema["properties"]["lr"]["description"]


def test_the_spec_is_registered_with_valid_presets():
    spec = get_spec("reward")
    assert spec.queue == "gpu"
    assert spec.dataset_fields == ("train_dataset", "eval_dataset")
    assert spec.primary_metrics == ("train/loss", "eval/accuracy")
    assert {"tiny-cpu-demo", "skywork-llama-8b", "skywork-gemma-27b"} <= set(spec.presets)
    for name, preset in spec.presets.items():
        cfg = spec.validate({**preset, "train_dataset": "p.jsonl"})
        assert cfg.lr == preset["lr"], name
    assert (
        spec.presets["tiny-cpu-demo"]["model_path"] == "tiny" and spec.presets["tiny-cpu-demo"]["lr"] >= 1e-4
    )
    assert spec.presets["skywork-gemma-27b"]["lr"] == 2e-6
