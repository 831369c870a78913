"""Honest presets: every preset of the model trainers (rl, dapo, sft, reward) states the hardware it
needs, uses fields that exist, and fits that hardware by the memory estimate; tiny presets fit a CPU. A
preset whose layout its trainer cannot run yet says so, and does not fit what the trainer runs."""

from __future__ import annotations

import pytest

from trainers.base import all_specs
from trainers.common import memory_estimate as me
from trainers.common.memory_estimate import REFERENCE_SHAPES, TINY_MODEL_INFO, estimate_for_config

CPU_BUDGET = 4 * 2**30


def _model_name(config: dict) -> str:
    path = str(config.get("model_path", "tiny"))
    return path.rstrip("/").rsplit("/", 1)[-1]


def _presets():
    for spec in all_specs():
        if spec.kind not in me.KINDS:
            continue
        for name, preset in spec.presets.items():
            yield spec, name, preset


@pytest.mark.parametrize(("spec", "name", "preset"), list(_presets()), ids=lambda v: getattr(v, "kind", v))
def test_every_preset_states_its_hardware_uses_real_fields_and_fits_it(spec, name, preset):
    hardware = spec.preset_hardware.get(name)
    assert hardware and hardware.get("summary"), f"{spec.kind}/{name} states no hardware"
    datasets = {name: f"{name}.jsonl" for name in spec.dataset_fields}  # launch fills these in
    config = spec.validate({**datasets, **preset}).model_dump(mode="json")  # uses fields that exist
    model = _model_name(config)
    if model == "tiny":
        assert hardware["gpu_memory_gb"] is None and hardware["ready"]
        e = estimate_for_config(spec.kind, config, TINY_MODEL_INFO, device="cpu")
        assert e.total < CPU_BUDGET, e.describe()
        return
    assert model in REFERENCE_SHAPES, f"{spec.kind}/{name}: no reference shape for {model}"
    gpu, gpus = hardware["gpu_memory_gb"] * 10**9, hardware["gpus_per_node"]
    stated = {**config, "nproc_per_node": gpus, "nodes": hardware["nodes"]}  # the layout the text states

    def estimated(cfg, vllm=True):
        return estimate_for_config(
            spec.kind, cfg, REFERENCE_SHAPES[model], gpu, gpus_per_node=gpus, vllm_available=vllm
        )

    e = estimated(stated)
    assert e.fits(gpu), f"{spec.kind}/{name}: {e.describe()} > {hardware['summary']}"
    assert not [n for n in e.notes if "vLLM" in n], e.notes
    if _get_engine(config) != "vllm":  # a worker without vLLM runs the torch sampler: it must fit too
        assert estimated(stated, vllm=False).fits(gpu), f"{spec.kind}/{name} with the torch sampler"
    own = estimated(config)
    if hardware["ready"]:
        assert own.assumptions["world_size"] == e.assumptions["world_size"]
    else:
        # a preset its trainer cannot run yet says so, and it truly does not fit what the trainer runs
        assert "Cannot run yet" in hardware["summary"]
        assert own.assumptions["world_size"] < e.assumptions["world_size"] and not own.fits(gpu)


def _get_engine(config: dict) -> str:
    section = config.get("rollout") or config.get("generate") or {}
    return section.get("engine", "none")
