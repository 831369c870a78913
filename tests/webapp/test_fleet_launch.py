"""Launch validated against the worker registry (issue 10, "Bad input"): through the API on real
PostgreSQL, with worker reports stored by the registry's own service. Every refusal is a 400 naming
the field, with no Run (nothing queued); a queue nobody has reported on accepts the run unchecked
and its page says so."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from tests.conftest import NPG_CONFIG
from trainers.common.model_roots import catalogue
from webapp.fleet.models import LaunchCheck, WorkerReport
from webapp.fleet.services import report_upsert
from webapp.runs.launch_checks import check_launch, vllm_only_settings
from webapp.runs.models import Run

pytestmark = pytest.mark.django_db

GiB = 2**30
SMALL = {  # the tiny Qwen2 shape (trainers/common/tiny.py)
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 128, "num_hidden_layers": 4,
    "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 352, "vocab_size": 101,
    "max_position_embeddings": 512, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
}  # fmt: skip
QWEN_32B = {  # DeepSeek-R1-Distill-Qwen-32B's config.json numbers
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 5120, "num_hidden_layers": 64,
    "num_attention_heads": 40, "num_key_value_heads": 8, "intermediate_size": 27648, "vocab_size": 152064,
    "max_position_embeddings": 131072, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
}  # fmt: skip


def model_dir(root: Path, name: str, config: dict, template: bool) -> None:
    directory = root / name
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps(config))
    tokenizer = {"tokenizer_class": "PreTrainedTokenizerFast"}
    if template:
        tokenizer["chat_template"] = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer))


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> list[dict]:
    """The catalogue a worker would report for a root with three models (no weights: the web side
    sees only the catalogue, whose counts then come from the config)."""
    root = tmp_path_factory.mktemp("models")
    model_dir(root, "Qwen/small", SMALL, template=True)
    model_dir(root, "base-no-template", SMALL, template=False)
    model_dir(root, "Qwen/big-32b", QWEN_32B, template=True)
    return catalogue([root])


def report(name="g1@gpu-host", queues=("gpu",), gpus=(80,), vllm=None, deepspeed=None, models=(), slots=1):
    return report_upsert(
        name=name,
        host=name.split("@")[-1],
        queues=list(queues),
        slots=slots,
        gpus=[
            {"index": i, "name": "H100", "total_bytes": g * GiB, "free_bytes": g * GiB}
            for i, g in enumerate(gpus)
        ],
        packages={"torch": "2.11.0", "vllm": vllm, "deepspeed": deepspeed},
        catalogue=models,
    )


def launch(api, project, kind="sft", **config):
    body = {"project": project.id, "kind": kind, "config": config}
    if kind == "sft":
        body["preset"] = "tiny-cpu-demo"
    return api.post("/api/runs/", body, format="json")


def refused(resp, field: str) -> str:
    assert resp.status_code == 400, resp.content
    errors = resp.json()["errors"]
    assert field in errors, errors
    assert Run.objects.count() == 0 and LaunchCheck.objects.count() == 0
    return " ".join(errors[field])


# --- model_path ------------------------------------------------------------------------------------


def test_a_catalogue_model_launches_and_records_the_workers_checked(api, project, models):
    report(models=models)
    report(name="c1@cpu-host", queues=("cpu",), gpus=())
    resp = launch(api, project, model_path="Qwen/small")
    assert resp.status_code == 201, resp.content
    run = Run.objects.get(pk=resp.json()["id"])
    assert run.status == "queued" and run.queue == "gpu" and run.config["model_path"] == "Qwen/small"
    assert run.launch_check.checked and run.launch_check.workers == ["g1@gpu-host"]
    expected = {"queue": "gpu", "workers": ["g1@gpu-host"], "checked": True}
    assert resp.json()["launch_check"] == expected
    assert api.get(f"/api/runs/{run.pk}/").json()["launch_check"] == expected


def test_a_model_no_worker_of_the_queue_has_is_refused(api, project, models):
    report(models=models)
    report(name="c1@cpu-host", queues=("cpu",), gpus=(), models=[{**models[0], "name": "only-on-cpu"}])
    message = refused(launch(api, project, model_path="only-on-cpu"), "config.model_path")
    assert "choose a model from the workers' catalogue" in message and "Qwen/small" in message


def test_paths_are_refused_even_with_no_worker_reporting(api, project):
    assert not WorkerReport.objects.exists()
    for path in ["/models/Qwen/small", "../etc", "Qwen/../../x", "~/m"]:
        message = refused(launch(api, project, model_path=path), "config.model_path")
        assert "choose a model from the workers' catalogue" in message, path


def test_tiny_needs_no_catalogue(api, project, models):
    report(models=models)
    assert launch(api, project, model_path="tiny").status_code == 201


# --- no worker has reported ------------------------------------------------------------------------


def test_with_no_worker_of_the_queue_a_name_is_accepted_unchecked_and_the_page_says_so(
    api, client, alice, project, models
):
    report(name="c1@cpu-host", queues=("cpu",), gpus=(), models=models)  # another queue's worker
    resp = launch(api, project, model_path="Some/unknown-model")
    assert resp.status_code == 201, resp.content
    run = Run.objects.get(pk=resp.json()["id"])
    assert run.status == "queued" and not run.launch_check.checked and run.launch_check.queue == "gpu"
    assert resp.json()["launch_check"] == {"queue": "gpu", "workers": [], "checked": False}
    client.force_login(alice)
    page = client.get(f"/runs/{run.pk}/").content.decode()
    assert "not checked against any worker: none of queue gpu had reported" in page


def test_stale_and_stopped_reports_do_not_count(api, project, models):
    old = report(models=models)
    WorkerReport.objects.filter(pk=old.pk).update(reported_at=timezone.now() - timedelta(seconds=61))
    report(name="g2@gpu-host", models=models)
    WorkerReport.objects.filter(name="g2@gpu-host").update(stopped_at=timezone.now())
    resp = launch(api, project, model_path="Some/unknown-model")
    assert resp.status_code == 201 and not Run.objects.get().launch_check.checked
    assert api.get("/api/workers/").json()["results"] == []


# --- chat template ---------------------------------------------------------------------------------


def test_auto_chat_template_on_a_model_without_one_is_refused(api, project, models):
    report(models=models)
    # the tiny SFT preset reads raw prompts; a real model's default is auto
    message = refused(
        launch(api, project, model_path="base-no-template", chat_template="auto"), "config.chat_template"
    )
    assert "base-no-template has none" in message
    ok = launch(api, project, model_path="base-no-template", chat_template="none")
    assert ok.status_code == 201, ok.content


# --- packages --------------------------------------------------------------------------------------


def test_vllm_rollouts_need_a_worker_with_vllm(api, project, models):
    report(models=models)
    body = {"model_path": "Qwen/small", "rollout": {"engine": "vllm"}}
    message = refused(launch(api, project, "rl", **body), "config.rollout.engine")
    assert "vLLM" in message
    report(name="g2@gpu-host", models=models, vllm="0.32.0")
    assert launch(api, project, "rl", **body).status_code == 201


def test_deepspeed_needs_a_worker_with_deepspeed(api, project, models):
    report(models=models)
    body = {"model_path": "Qwen/small", "engine": "deepspeed"}
    assert "DeepSpeed" in refused(launch(api, project, "rl", **body), "config.engine")


def test_vllm_only_settings_away_from_their_default_are_found():
    from pydantic import BaseModel, Field

    class Rollout(BaseModel):
        engine: str = "auto"
        gpu_memory_utilization: float = 0.5
        swap_space: int = Field(4, json_schema_extra={"x-orlab-vllm-only": True})

    class Config(BaseModel):
        rollout: Rollout = Field(default_factory=Rollout)
        eval: Rollout | None = None

    found = list(
        vllm_only_settings(
            Config,
            {"rollout": {"engine": "torch", "gpu_memory_utilization": 0.5, "swap_space": 8},
             "eval": {"gpu_memory_utilization": 0.9}},
        )
    )  # fmt: skip
    assert found == [("config.rollout.swap_space", 8, 4), ("config.eval.gpu_memory_utilization", 0.9, 0.5)]


# --- processes -------------------------------------------------------------------------------------


def test_processes_and_nodes_beyond_the_workers_are_refused(models):
    """nproc_per_node / nodes (the multi-process fields; checked whenever a config has them)."""
    report(models=models, gpus=(80,) * 4)
    report(name="g2@gpu-host", models=models, gpus=(80,) * 2)
    base = {"model_path": "Qwen/small", "chat_template": "auto"}
    assert check_launch("sft", {**base, "nproc_per_node": 4, "nodes": 1}, "gpu") == {}
    assert check_launch("sft", {**base, "nproc_per_node": "auto", "nodes": 2}, "gpu") == {}
    errors = check_launch("sft", {**base, "nproc_per_node": 8}, "gpu")
    assert list(errors) == ["config.nproc_per_node"] and "at most 4" in errors["config.nproc_per_node"][0]
    errors = check_launch("sft", {**base, "nproc_per_node": 2, "nodes": 3}, "gpu")
    assert list(errors) == ["config.nodes"] and "room for 2" in errors["config.nodes"][0]
    # only one worker has 4 GPUs: 4 ranks per node on 2 nodes do not fit
    assert list(check_launch("sft", {**base, "nproc_per_node": 4, "nodes": 2}, "gpu")) == ["config.nodes"]


def test_cpu_workers_host_ranks_and_nodes_per_slot():
    report(name="c1@cpu-host", queues=("cpu",), gpus=(), slots=2)
    config = {"nproc_per_node": 2, "nodes": 2}
    assert check_launch("tabular", config, "cpu") == {}
    assert list(check_launch("tabular", {**config, "nodes": 3}, "cpu")) == ["config.nodes"]


# --- memory ----------------------------------------------------------------------------------------


def test_a_config_over_the_memory_estimate_is_refused_with_the_numbers(api, project, models):
    pytest.importorskip("trainers.common.memory_estimate")
    report(models=models)
    message = refused(launch(api, project, model_path="Qwen/big-32b"), "config")
    assert "GiB" in message and "80.0 GiB on g1@gpu-host" in message and "parameters" in message
    assert launch(api, project, model_path="Qwen/small").status_code == 201


# --- sweeps and clones -----------------------------------------------------------------------------


def test_a_sweep_with_one_bad_model_launches_nothing(api, project, models):
    report(models=models)
    resp = api.post(
        "/api/runs/sweep/",
        {"project": project.id, "kind": "sft", "preset": "tiny-cpu-demo",
         "grid": {"model_path": ["Qwen/small", "missing-model"]}},
        format="json",
    )  # fmt: skip
    assert resp.status_code == 400, resp.content
    assert any("missing-model" in k and k.endswith("config.model_path") for k in resp.json()["errors"])
    assert Run.objects.count() == 0


def test_a_clone_onto_a_model_the_workers_lack_is_refused(api, project, models):
    report(models=models)
    run_id = launch(api, project, model_path="Qwen/small").json()["id"]
    resp = api.post(f"/api/runs/{run_id}/clone/", {"config": {"model_path": "missing-model"}}, format="json")
    assert resp.status_code == 400 and "config.model_path" in resp.json()["errors"]
    assert Run.objects.count() == 1


def test_runs_without_a_model_are_checked_too(api, project):
    report(name="c1@cpu-host", queues=("short",), gpus=())  # tabular runs go to the short queue
    resp = api.post(
        "/api/runs/", {"project": project.id, "kind": "tabular", "config": NPG_CONFIG}, format="json"
    )
    assert resp.status_code == 201 and Run.objects.get().launch_check.workers == ["c1@cpu-host"]


def test_a_resume_is_checked_again_against_the_workers_of_today(api, project, models):
    """A lost run whose model the workers no longer have is refused at resume (400 naming the field,
    the run stays lost, nothing queued); once a worker reports it again the resume goes through and the
    run's launch check names that worker."""
    report(models=models)
    run_id = launch(api, project, model_path="Qwen/small").json()["id"]
    Run.objects.filter(pk=run_id).update(status="lost")
    report(models=[m for m in models if m["name"] != "Qwen/small"])
    resp = api.post(f"/api/runs/{run_id}/resume/", {}, format="json")
    assert resp.status_code == 400 and "config.model_path" in resp.json()["errors"], resp.content
    run = Run.objects.get(pk=run_id)
    assert run.status == "lost" and run.attempt == 1
    report(name="g2@gpu-host", models=models)
    resp = api.post(f"/api/runs/{run_id}/resume/", {}, format="json")
    assert resp.status_code in (200, 201, 202), resp.content
    run.refresh_from_db()
    assert run.status == "queued" and run.attempt == 2
    assert "g2@gpu-host" in run.launch_check.workers
