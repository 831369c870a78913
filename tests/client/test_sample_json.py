"""The client's sample normalisation (orlab_client.client._sample_json): what JSON can carry, the same
through the flat-dict fast path and the general one."""

from __future__ import annotations

import json

import numpy as np

from orlab_client.client import _sample_json


def test_a_sample_becomes_plain_json():
    sample = {
        "prompt": "p", "completion": "c", "reward": float("nan"), "advantage": float("inf"), "x": -float("inf"),
        "length": 3, "truncated": False, "verdict": None, 7: "a non-string key", "reference": "42",
        "rewards": {"accuracy": np.float32(1.0), 2: float("nan")}, "pair": (1, 2.5),
        "tokens": {"offsets": np.arange(3), "logprobs": [0.5, float("nan")]},
        "flag": np.bool_(True), "f64": np.float64(2.0), "i64": np.int64(3),
    }  # fmt: skip
    out = _sample_json(sample)
    assert json.loads(json.dumps(out, allow_nan=False)) == {
        "prompt": "p", "completion": "c", "reward": None, "advantage": None, "x": None, "length": 3,
        "truncated": False, "verdict": None, "7": "a non-string key", "expected_answer": "42",
        "rewards": {"accuracy": 1.0, "2": None}, "pair": [1, 2.5],
        "tokens": {"offsets": [0, 1, 2], "logprobs": [0.5, None]}, "flag": True, "f64": 2.0, "i64": 3,
    }  # fmt: skip
    assert type(out["i64"]) is int  # numpy integers are no JSON type: made plain
    assert "reference" in sample  # the caller's dict is left as it was
