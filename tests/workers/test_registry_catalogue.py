"""The model catalogue a worker reports (trainers.common.model_roots), on model directories built by
trainers/common/tiny.py in temporary roots, and the GPU list's CUDA_VISIBLE_DEVICES handling."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from trainers.common import model_roots
from trainers.common.model_roots import (
    catalogue,
    estimate_parameters,
    model_directory,
    model_name_problem,
    resolve_model,
)
from trainers.common.tiny import build_tiny_model
from workers.gpu_probe import visible_order
from workers.registry import package_versions

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("built") / "tiny")


def place(tiny_dir: Path, root: Path, name: str) -> Path:
    target = root / name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(tiny_dir, target)
    return target


def drop_chat_template(directory: Path) -> None:
    (directory / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((directory / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (directory / "tokenizer_config.json").write_text(json.dumps(config))


def test_catalogue_lists_flat_and_org_name_models_with_their_numbers(tiny_dir, tmp_path):
    root = tmp_path / "models"
    place(tiny_dir, root, "tiny-a")
    place(tiny_dir, root, "Qwen/tiny-b")
    (root / "not-a-model").mkdir()
    (root / ".cache" / "x").mkdir(parents=True)
    (root / ".cache" / "x" / "config.json").write_text("{}")
    entries = catalogue([root])
    assert [e["name"] for e in entries] == ["Qwen/tiny-b", "tiny-a"]
    entry = entries[0]
    config = json.loads((tiny_dir / "config.json").read_text())
    weights = load_file(str(tiny_dir / "model.safetensors"))
    assert entry["architecture"] == "Qwen2ForCausalLM" and entry["model_type"] == "qwen2"
    assert entry["parameters"] == sum(t.numel() for t in weights.values())
    assert entry["parameters_source"] == "safetensors"
    assert entry["weights_bytes"] == sum(t.numel() * t.element_size() for t in weights.values())
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads"):
        assert entry[key] == config[key]
    assert entry["intermediate_size"] == 352 and entry["vocab_size"] == config["vocab_size"]
    assert entry["max_position_embeddings"] == 512 and entry["tie_word_embeddings"] is True
    assert entry["torch_dtype"] == "float32" and entry["chat_template"] is True


def test_parameter_count_of_a_sharded_checkpoint_reads_only_the_headers(tiny_dir, tmp_path):
    root = tmp_path / "models"
    target = place(tiny_dir, root, "sharded")
    weights = load_file(str(target / "model.safetensors"))
    (target / "model.safetensors").unlink()
    names = sorted(weights)
    half = len(names) // 2
    shards = {
        "model-00001-of-00002.safetensors": names[:half],
        "model-00002-of-00002.safetensors": names[half:],
    }
    for filename, keys in shards.items():
        save_file({k: weights[k] for k in keys}, str(target / filename))
    weight_map = {k: f for f, keys in shards.items() for k in keys}
    (target / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    # the data after the headers is never read: zeroing it changes nothing
    for filename in shards:
        path = target / filename
        header = 8 + int.from_bytes(path.read_bytes()[:8], "little")
        path.write_bytes(path.read_bytes()[:header] + b"\0" * (path.stat().st_size - header))
    (entry,) = catalogue([root])
    assert entry["parameters"] == sum(t.numel() for t in weights.values())


def test_without_weights_the_count_is_estimated_from_the_config(tiny_dir, tmp_path):
    root = tmp_path / "models"
    target = place(tiny_dir, root, "config-only")
    (target / "model.safetensors").unlink()
    (entry,) = catalogue([root])
    exact = sum(t.numel() for t in load_file(str(tiny_dir / "model.safetensors")).values())
    assert entry["parameters_source"] == "config" and entry["weights_bytes"] is None
    assert abs(entry["parameters"] - exact) / exact < 0.01  # only q/k/v biases are left out


def test_estimate_matches_a_published_size():
    # Qwen2.5-7B: 7.6 B parameters (untied embeddings), from its config.json numbers
    numbers = {
        "hidden_size": 3584, "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
        "intermediate_size": 18944, "vocab_size": 152064, "tie_word_embeddings": False,
    }  # fmt: skip
    assert abs(estimate_parameters(numbers) - 7_615_616_512) / 7_615_616_512 < 0.001
    assert estimate_parameters({"hidden_size": 8}) is None


def test_chat_template_is_detected_in_both_places(tiny_dir, tmp_path):
    root = tmp_path / "models"
    place(tiny_dir, root, "jinja-file")
    drop_chat_template(place(tiny_dir, root, "none"))
    in_config = place(tiny_dir, root, "in-config")
    template = (in_config / "chat_template.jinja").read_text()
    (in_config / "chat_template.jinja").unlink()
    config = json.loads((in_config / "tokenizer_config.json").read_text())
    (in_config / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": template}))
    flags = {e["name"]: e["chat_template"] for e in catalogue([root])}
    assert flags == {"in-config": True, "jinja-file": True, "none": False}


def test_resolve_model_finds_names_and_refuses_paths_and_escapes(tiny_dir, tmp_path):
    first, second, outside = tmp_path / "a", tmp_path / "b", tmp_path / "outside"
    place(tiny_dir, first, "Qwen/tiny")
    place(tiny_dir, second, "other")
    place(tiny_dir, outside, "secret")
    (second / "link").symlink_to(outside / "secret")
    roots = [first, second]
    assert resolve_model("Qwen/tiny", roots) == (first / "Qwen" / "tiny").resolve()
    assert resolve_model("other", roots) == (second / "other").resolve()
    for bad, reason in [
        (str(outside / "secret"), "absolute path"),
        ("../outside/secret", "'..'"),
        ("Qwen/../../outside/secret", "'..'"),
        ("link", "outside the model root"),
        ("missing", "not under any model root"),
        ("a/b/c", "org/name"),
        ("", "non-empty"),
    ]:
        with pytest.raises(ValueError, match=reason):
            resolve_model(bad, roots)
    # the escaping link is not in the catalogue either: what is listed always resolves
    assert [e["name"] for e in catalogue(roots)] == ["Qwen/tiny", "other"]


def test_trainers_load_absolute_directories_as_given_and_names_from_the_roots(tiny_dir, tmp_path):
    root = tmp_path / "models"
    place(tiny_dir, root, "Org/m")
    assert model_directory(str(tiny_dir), [root]) == tiny_dir  # the CLI, or a platform checkpoint
    assert model_directory("Org/m", [root]) == (root / "Org" / "m").resolve()
    with pytest.raises(ValueError, match="not under any model root"):
        model_directory("models/Org", [root])  # a relative path is a name, never a path


def test_a_broken_model_directory_is_a_note_not_a_failed_report(tiny_dir, tmp_path):
    root = tmp_path / "models"
    place(tiny_dir, root, "good")
    (root / "broken").mkdir()
    (root / "broken" / "config.json").write_text("{not json")
    scan = model_roots.scan([root, tmp_path / "missing"])
    assert [e["name"] for e in scan.entries] == ["good"]
    assert any(n.startswith("broken: skipped, config.json is not valid JSON") for n in scan.notes), scan.notes
    assert any("missing is not a directory" in n for n in scan.notes), scan.notes


def test_roots_come_from_the_environment(tiny_dir, tmp_path, monkeypatch):
    first, second = tmp_path / "a", tmp_path / "b"
    place(tiny_dir, first, "m")
    place(tiny_dir, second, "m")  # the same name twice: the first root wins, as in resolve_model
    monkeypatch.setenv(model_roots.ENV, os.pathsep.join([str(first), "", str(second)]))
    assert model_roots.model_roots() == [first, second]
    assert [e["name"] for e in catalogue()] == ["m"]
    assert resolve_model("m") == (first / "m").resolve()
    monkeypatch.delenv(model_roots.ENV)
    with pytest.raises(ValueError, match="no model roots"):
        resolve_model("m")
    scan = model_roots.scan([tmp_path / "nope"])
    assert scan.entries == [] and "is not a directory" in scan.notes[0]


def test_model_name_shapes():
    assert model_name_problem("Qwen/Qwen2.5-7B") is None and model_name_problem("tiny") is None
    for bad in ("/abs", "~/m", "C:\\m", "a\\b", "a/../b", "..", "a//b", "a/", ".hidden", "a/b/c", 3, None):
        assert model_name_problem(bad), bad


def test_model_roots_imports_no_torch():
    """The web app imports it to refuse paths at launch."""
    code = "import sys, trainers.common.model_roots; assert 'torch' not in sys.modules"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_visible_devices_follow_cuda_rules():
    uuids = ["GPU-aaa1", "GPU-aab2", "GPU-ccc3"]
    assert visible_order(None, uuids) == [0, 1, 2]
    assert visible_order("", uuids) == []
    assert visible_order("2,0", uuids) == [2, 0]
    assert visible_order("1,7,0", uuids) == [1]  # an ordinal past the last GPU ends the list
    assert visible_order("1gpu,-1,2", uuids) == [1]  # strtoul-like; a negative one ends it
    assert visible_order("0,0", uuids) == []  # a repeated entry hides every GPU
    assert visible_order("GPU-c,GPU-aab", uuids) == [2, 1]
    assert visible_order("GPU-aa", uuids) == []  # an ambiguous prefix ends the list


def test_package_versions_do_not_import_the_packages():
    before = set(sys.modules)
    versions = package_versions()
    assert versions["torch"] == torch.__version__.split("+")[0] or versions["torch"] == torch.__version__
    assert "vllm" in versions and "deepspeed" in versions
    assert not {"vllm", "deepspeed"} & (set(sys.modules) - before)
