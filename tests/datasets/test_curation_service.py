"""Curation end to end on PostgreSQL: datasets imported through the API, curated into a new version
(every source row, kept or dropped with a reason; stats per step and per source), contamination
against a problems set, the reward-model steps on PairScores, all-or-nothing writes, access, the
API, the real worker, and a 200,000-pair scale check."""

import json
import random
import time
from collections import Counter

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.conftest import wait_for
from webapp.datasets import services as import_services
from webapp.datasets.curation import service
from webapp.datasets.curation import steps as st
from webapp.datasets.models import Dataset, PairScore, PreferencePair
from webapp.runs.models import Checkpoint, Run

pytestmark = pytest.mark.django_db

LONG = (
    "Write a detailed essay about the history of the printing press in Europe, covering Gutenberg, "
    "the spread of movable type, and its effect on literacy and the Reformation"
)


def pair(
    prompt, chosen="A clear and correct answer.", rejected="A wrong answer.", source="helpsteer2", **extra
):
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, "source": source, **extra}


def jsonl(rows) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def upload(api, project, rows, name="prefs", kind="preference") -> int:
    f = SimpleUploadedFile(f"{name}.jsonl", jsonl(rows))
    resp = api.post("/api/datasets/", {"file": f, "name": name, "kind": kind, "project": project.id})
    assert resp.status_code == 201, resp.content
    return resp.json()["id"]


def curate(api, ds_id, steps, name="r"):
    return api.post(
        f"/api/datasets/{ds_id}/curate/", {"recipe": {"name": name, "steps": steps}}, format="json"
    )


def curate_and_run(api, ds_id, steps) -> Dataset:
    resp = curate(api, ds_id, steps)
    assert resp.status_code == 202, resp.content
    return service.curation_run(Dataset.objects.get(pk=resp.json()["id"]))


def reasons(ds) -> dict[int, str]:
    return dict(PreferencePair.objects.filter(dataset=ds, kept=False).values_list("row", "drop_reason"))


STEP_PREFIX = {
    "exact_dedup": ("exact_duplicate",),
    "near_dedup": ("near_duplicate",),
    "length": ("length:",),
    "length_ratio": ("length_ratio",),
    "near_identical": ("near_identical",),
    "source_select": ("source_",),
    "contamination": ("contaminated",),
    "margin_filter": ("margin ", "unscored"),
    "top_slice": ("top_slice",),
    "consistency": ("inconsistent",),
}


def assert_stats_match_rows(ds: Dataset, source: Dataset):
    """Stats per step and per source agree with the stored rows' drop reasons."""
    stats = ds.meta["curation_stats"]
    rows = list(PreferencePair.objects.filter(dataset=ds).values("source", "kept", "drop_reason"))
    source_dropped = PreferencePair.objects.filter(dataset=source, kept=False).count()
    live = Counter(r["source"] for r in rows) - Counter(
        r["source"] for r in PreferencePair.objects.filter(dataset=source, kept=False).values("source")
    )
    assert stats["rows"] == len(rows) and stats["in"] == len(rows) - source_dropped
    for step in stats["steps"]:
        prefixes = STEP_PREFIX[step["step"]]
        mine = Counter(r["source"] for r in rows if not r["kept"] and r["drop_reason"].startswith(prefixes))
        assert step["dropped"] == sum(mine.values()), step
        assert step["in"] == sum(live.values()), step
        assert step["by_source"] == {s: {"in": n, "dropped": mine[s]} for s, n in sorted(live.items()) if n}
        live -= mine
    kept = Counter(r["source"] for r in rows if r["kept"])
    assert {s: n for s, n in stats["kept_by_source"].items() if n} == dict(kept)
    assert stats["kept"] == sum(kept.values())


# --- the service end to end ---------------------------------------------------------------------

E2E_PAIRS = [
    pair("How do I bake sourdough bread at home?"),  # 0
    pair("how do I bake   sourdough bread at HOME?"),  # 1 exact duplicate of 0
    pair(LONG, source="offsetbias"),  # 2
    pair(LONG + " please", source="offsetbias"),  # 3 near duplicate of 2
    pair("Summarise the plot of Hamlet.", chosen="x" * 400, source="magpie"),  # 4 too long
    pair("Name three primes.", chosen="2, 3 and 5 are prime numbers indeed.", rejected="1, 2", source="magpie"),  # 5
    pair("Define entropy.", chosen="the measure of disorder in a system of particles", rejected="the measure of disorder in a system of particles!", source="magpie"),  # 6 near identical
    pair("What is the boiling point of water?", source="magpie"),  # 7
    pair("Who wrote Dune?", source="magpie"),  # 8
    pair("Translate 'cat' into French.", source="magpie"),  # 9
    pair("Give me a haiku about rain.", source="helpsteer2"),  # 10
]  # fmt: skip

E2E_STEPS = [
    {"step": "exact_dedup"},
    {"step": "near_dedup", "threshold": 0.8},
    {"step": "length", "max_chosen": 300},
    {"step": "length_ratio", "max_ratio": 8},
    {"step": "near_identical", "threshold": 0.8},
    {"step": "source_select", "caps": {"magpie": 2}, "seed": 0},
]


def test_curation_makes_a_new_version_with_every_row_and_its_reason(api, project):
    src_id = upload(api, project, E2E_PAIRS)
    resp = curate(api, src_id, E2E_STEPS, name="e2e")
    assert resp.status_code == 202, resp.content
    data = resp.json()
    assert data["version"] == 2 and data["parent"] == src_id and data["name"] == "prefs"
    assert data["status"] == "importing" and data["kind"] == "preference"
    assert data["meta"]["recipe"]["steps"][1]["num_perm"] == 128  # defaults stored

    ds = service.curation_run(Dataset.objects.get(pk=data["id"]))
    source = Dataset.objects.get(pk=src_id)
    assert ds.status == "ready" and ds.row_count == len(E2E_PAIRS) and ds.progress == 1.0
    new_rows = list(
        PreferencePair.objects.filter(dataset=ds)
        .order_by("row")
        .values("row", "prompt", "chosen", "source", "chosen_len")
    )
    old_rows = list(
        PreferencePair.objects.filter(dataset=source)
        .order_by("row")
        .values("row", "prompt", "chosen", "source", "chosen_len")
    )
    assert new_rows == old_rows  # every row copied unchanged
    assert not PreferencePair.objects.filter(dataset=source, kept=False).exists()  # the source is untouched

    got = reasons(ds)
    assert got == {
        1: "exact_duplicate",
        3: "near_duplicate of row 2",
        4: "length: chosen > 300",
        5: "length_ratio 9 > 8",
        6: "near_identical (1.00)",
        **{r: "source_cap: magpie over 2" for r in got if 7 <= r <= 9},
    }
    assert sum(1 for r in (7, 8, 9) if r in got) == 1  # 3 magpie pairs left, capped at 2

    stats = ds.meta["curation_stats"]
    assert [s["step"] for s in stats["steps"]] == [s["step"] for s in E2E_STEPS]
    assert [(s["in"], s["dropped"]) for s in stats["steps"]] == [
        (11, 1),
        (10, 1),
        (9, 1),
        (8, 1),
        (7, 1),
        (6, 1),
    ]
    assert stats["steps"][2]["params"]["max_chosen"] == 300 and "step" not in stats["steps"][2]["params"]
    assert stats["steps"][5]["by_source"] == {
        "helpsteer2": {"in": 2, "dropped": 0},
        "magpie": {"in": 3, "dropped": 1},
        "offsetbias": {"in": 1, "dropped": 0},
    }
    assert stats["kept_by_source"] == {"helpsteer2": 2, "magpie": 2, "offsetbias": 1}
    assert_stats_match_rows(ds, source)

    # the API shows the recipe and stats, and filters the new version's pairs
    curation = api.get(f"/api/datasets/{ds.id}/curation/").json()
    assert curation["recipe"]["name"] == "e2e" and curation["stats"] == stats and curation["parent"] == src_id
    assert api.get(f"/api/datasets/{ds.id}/pairs/?kept=false").json()["count"] == 6
    dup = api.get(f"/api/datasets/{ds.id}/pairs/?drop_reason=exact_duplicate").json()["results"]
    assert [p["row"] for p in dup] == [1]
    assert api.get(f"/api/datasets/{src_id}/curation/").status_code == 404  # imported, not curated


def test_curating_a_curated_version_keeps_earlier_drops(api, project):
    src_id = upload(api, project, E2E_PAIRS)
    v2 = curate_and_run(api, src_id, [{"step": "exact_dedup"}])
    v3 = curate_and_run(api, v2.id, [{"step": "length", "max_chosen": 300}])
    assert (v3.version, v3.parent_id) == (3, v2.id)
    assert reasons(v3) == {1: "exact_duplicate", 4: "length: chosen > 300"}
    stats = v3.meta["curation_stats"]
    assert stats["in"] == 10 and stats["steps"][0]["in"] == 10 and stats["kept"] == 9
    assert_stats_match_rows(v3, v2)


def test_a_curated_version_is_searchable_like_its_source(api, project):
    src_id = upload(api, project, E2E_PAIRS)
    v2 = curate_and_run(api, src_id, [{"step": "exact_dedup"}])
    from django.db import connection

    def vectors(ds_id):
        with connection.cursor() as cur:
            cur.execute(
                'SELECT search::text FROM datasets_preferencepair WHERE dataset_id = %s ORDER BY "row"',
                [ds_id],
            )
            return [r[0] for r in cur.fetchall()]

    # the search vectors were copied from the source rows
    assert vectors(v2.id) == vectors(src_id) and all(vectors(v2.id))
    word = PreferencePair.objects.get(dataset_id=src_id, row=0).prompt.split()[-1]
    assert api.get(f"/api/datasets/{v2.id}/pairs/?search={word}").json()["count"] >= 1


def test_contamination_against_a_problems_dataset_and_a_preference_benchmark(api, project):
    problems = [
        {"prompt": "Alice has three apples and buys five more at the market on Sunday morning. How many does she have?", "answer": "8"},
        {"prompt": "What is the derivative of x squared?", "answer": "2x"},
    ]  # fmt: skip
    bench_id = upload(api, project, problems, name="bench", kind="problems")
    rows = [
        pair("Quick one: Alice has three apples and buys five more at the market on Sunday morning, right?"),
        pair("what is the derivative of X squared?"),
        pair("What is the integral of x squared?"),
        pair("Tell me a story about a dragon who learns to fly over the misty mountains at dawn"),
    ]
    src_id = upload(api, project, rows)
    rb_id = upload(
        api,
        project,
        [pair("Please tell me a story about a dragon who learns to fly over the misty mountains at dawn")],
        name="rewardbench",
    )
    steps = [
        {"step": "contamination", "benchmark": bench_id},
        {"step": "contamination", "benchmark": rb_id, "n": 8, "exact": False},
    ]
    ds = curate_and_run(api, src_id, steps)
    assert reasons(ds) == {
        0: "contaminated: 13-gram overlap with bench v1",
        1: "contaminated: exact prompt match with bench v1",
        3: "contaminated: 8-gram overlap with rewardbench v1",
    }
    stats = ds.meta["curation_stats"]["steps"]
    assert stats[0]["params"] == {"benchmark": bench_id, "n": 13, "exact": True}
    assert [(s["in"], s["dropped"]) for s in stats] == [(4, 2), (2, 1)]


# --- reward-model steps on PairScores ---------------------------------------------------------------


def make_checkpoint(project, name="rm") -> Checkpoint:
    run = Run.objects.create(project=project, name=name, kind=Run.EXTERNAL, status=Run.Status.RUNNING)
    return Checkpoint.objects.create(run=run, step=100, path=f"/ckpt/{name}/100")


def score(ds_id, ckpt, margins: dict[int, tuple[float, float]]):
    pairs = {p.row: p for p in PreferencePair.objects.filter(dataset_id=ds_id)}
    PairScore.objects.bulk_create(
        PairScore(pair=pairs[row], checkpoint=ckpt, chosen=c, rejected=r, margin=c - r)
        for row, (c, r) in margins.items()
    )


RM_PAIRS = [
    pair("hs 0"), pair("hs 1"), pair("hs 2"),  # 0-2 helpsteer2
    pair("wg 0", source="wildguard"), pair("wg 1", source="wildguard"), pair("wg 2", source="wildguard"),  # 3-5
    pair("mp 0", source="magpie_ultra", category="Math", score=0.9),  # 6
    pair("mp 1", source="magpie_air", category="Math", score=0.95),  # 7: 0.85 after the Air offset
    pair("mp 2", source="magpie_ultra", category="Math", score=0.2),  # 8
    pair("mp 3", source="magpie_ultra", category="Math", score=0.1),  # 9
    pair("mp 4", source="magpie_ultra", category="Advice", score=0.7),  # 10
    pair("mp 5", source="magpie_ultra", category="Creative writing", score=0.3),  # 11
]  # fmt: skip


def test_consistency_top_slice_and_margin_with_a_checkpoint(api, project):
    src_id = upload(api, project, RM_PAIRS)
    rm = make_checkpoint(project)
    score(src_id, rm, {0: (2.0, 0.0), 1: (1.0, 0.9), 3: (1.0, -1.0), 4: (0.0, 0.5), 6: (0.0, 1.0)})
    steps = [
        {"step": "consistency", "checkpoint": rm.id, "sources": ["wildguard"]},
        {
            "step": "top_slice",
            "sources": ["magpie_ultra", "magpie_air"],
            "fractions": {"math": 0.25, "*": 0.5},
            "offsets": {"magpie_air": 0.1},
        },
        {"step": "margin_filter", "checkpoint": rm.id, "threshold": 0.5, "unscored": "keep"},
    ]
    ds = curate_and_run(api, src_id, steps)
    assert reasons(ds) == {
        4: "inconsistent: rm prefers rejected",
        5: "inconsistent: unscored",
        7: "top_slice: below top 25% of math",  # the Air pair ranks below row 6 after its offset
        8: "top_slice: below top 25% of math",
        9: "top_slice: below top 25% of math",
        11: "top_slice: below top 50% of other categories",
        1: "margin 0.1 < 0.5",
        6: "margin -1 < 0.5",  # scored by the RM although its slice came from metadata
    }
    assert_stats_match_rows(ds, Dataset.objects.get(pk=src_id))


def test_top_slice_by_checkpoint_score_and_scores_of_an_earlier_version(api, project):
    src_id = upload(api, project, RM_PAIRS)
    rm = make_checkpoint(project)
    # scores live on v1's pairs; v2 (dedup) and v3 are matched to them by row
    score(src_id, rm, {6: (1.0, 0.0), 7: (3.0, 0.0), 8: (2.0, 0.0), 9: (0.5, 0.0), 0: (1.0, 2.0)})
    v2 = curate_and_run(api, src_id, [{"step": "exact_dedup"}])
    v3 = curate_and_run(
        api,
        v2.id,
        [
            {"step": "top_slice", "sources": ["magpie_ultra", "magpie_air"], "checkpoint": rm.id, "fractions": {"math": 0.5}},
            {"step": "margin_filter", "checkpoint": rm.id, "threshold": 0.0, "unscored": "keep"},
        ],
    )  # fmt: skip
    assert reasons(v3) == {
        6: "top_slice: below top 50% of math",
        9: "top_slice: below top 50% of math",
        0: "margin -1 < 0",
    }


def test_references_must_be_in_your_projects(api, project, bob):
    from webapp.projects.services import project_create

    src_id = upload(api, project, RM_PAIRS)
    bob_project = project_create(user=bob, name="bob-lab")
    bob_rm = make_checkpoint(bob_project, "bob-rm")
    bob_bench = Dataset.objects.create(project=bob_project, name="b", kind="problems", status="ready")
    resp = curate(
        api,
        src_id,
        [
            {"step": "contamination", "benchmark": bob_bench.id},
            {"step": "consistency", "checkpoint": bob_rm.id},
            {"step": "margin_filter", "checkpoint": 10**9, "threshold": 0},
        ],
    )
    assert resp.status_code == 400
    assert resp.json()["errors"] == {
        "recipe.steps[0].benchmark": ["no such dataset among yours"],
        "recipe.steps[1].checkpoint": ["no such checkpoint among yours"],
        "recipe.steps[2].checkpoint": ["no such checkpoint among yours"],
    }
    assert Dataset.objects.filter(name="prefs").count() == 1  # no version was made


# --- all or nothing ---------------------------------------------------------------------------------


def test_a_step_that_raises_leaves_no_rows_and_marks_the_dataset_failed(api, project, monkeypatch):
    src_id = upload(api, project, E2E_PAIRS)

    def boom(rows, params):
        list(rows)
        raise RuntimeError("boom in length")

    monkeypatch.setitem(st.STEPS, "length", boom)
    new_id = curate(api, src_id, E2E_STEPS).json()["id"]
    with pytest.raises(RuntimeError, match="boom in length"):
        service.curation_run(Dataset.objects.get(pk=new_id))
    ds = Dataset.objects.get(pk=new_id)
    assert ds.status == "failed" and "RuntimeError: boom in length" in ds.error and ds.row_count == 0
    assert "curation_stats" not in ds.meta and not PreferencePair.objects.filter(dataset=ds).exists()


def test_a_failure_after_the_rows_were_written_rolls_them_back(api, project, monkeypatch):
    src_id = upload(api, project, E2E_PAIRS)
    write = service._write

    def write_then_fail(new, src, drops):
        write(new, src, drops)
        assert PreferencePair.objects.filter(dataset=new).count() == len(E2E_PAIRS)
        raise OSError("disk full")

    monkeypatch.setattr(service, "_write", write_then_fail)
    new_id = curate(api, src_id, [{"step": "exact_dedup"}]).json()["id"]
    with pytest.raises(OSError):
        service.curation_run(Dataset.objects.get(pk=new_id))
    ds = Dataset.objects.get(pk=new_id)
    assert ds.status == "failed" and "disk full" in ds.error
    assert not PreferencePair.objects.filter(dataset=ds).exists()


# --- the API ------------------------------------------------------------------------------------------


def test_bad_recipes_answer_400_with_field_paths(api, project):
    src_id = upload(api, project, E2E_PAIRS)
    resp = curate(api, src_id, [{"step": "exact_dedup"}, {"step": "near_dedup", "threshold": 2}])
    assert resp.status_code == 400
    assert resp.json()["detail"] == "invalid recipe"
    assert list(resp.json()["errors"]) == ["recipe.steps[1].threshold"]
    assert curate(api, src_id, [{"step": "nope"}]).json()["errors"].keys() == {"recipe.steps[0].step"}
    assert api.post(f"/api/datasets/{src_id}/curate/", {}, format="json").json()["errors"].keys() == {
        "recipe"
    }
    assert api.post(f"/api/datasets/{src_id}/curate/", {"recipe": [1]}, format="json").json()["errors"] == {
        "recipe": ["must be an object"]
    }
    problems_id = upload(api, project, [{"prompt": "1+1", "answer": "2"}], name="p", kind="problems")
    assert curate(api, problems_id, [{"step": "exact_dedup"}]).json()["errors"].keys() == {"dataset"}
    assert Dataset.objects.filter(name="prefs").count() == 1


def test_other_users_get_404(api, bob_api, project):
    src_id = upload(api, project, E2E_PAIRS)
    assert curate(bob_api, src_id, [{"step": "exact_dedup"}]).status_code == 404
    new_id = curate(api, src_id, [{"step": "exact_dedup"}]).json()["id"]
    assert bob_api.get(f"/api/datasets/{new_id}/curation/").status_code == 404
    assert api.get(f"/api/datasets/{new_id}/curation/").status_code == 200
    assert curate(api, 10**9, [{"step": "exact_dedup"}]).status_code == 404


def test_curate_records_its_task_for_the_short_queue_with_the_new_version(api, project):
    from webapp.outbox.models import Message

    src_id = upload(api, project, E2E_PAIRS)
    new_id = curate(api, src_id, [{"step": "exact_dedup"}]).json()["id"]
    (message,) = Message.objects.filter(subject="dataset", subject_id=new_id)  # the outbox sends it
    assert (message.task, message.args, message.queue) == ("workers.tasks.curate_dataset", [new_id], "short")


def test_steps_endpoint_serves_the_schema_and_valid_examples(api):
    from webapp.datasets.curation.recipes import recipe_validate

    data = api.get("/api/curation/steps/").json()
    assert "steps" in data["schema"]["properties"]
    assert {s["step"] for s in data["steps"]} == set(st.STEPS)
    assert {e["name"] for e in data["examples"]} >= {"skywork-style", "dedup"}
    for example in data["examples"]:
        recipe_validate(example["recipe"])
    paths = api.get("/api/schema/?format=json").json()["paths"]
    assert {"/api/datasets/{id}/curate/", "/api/datasets/{id}/curation/", "/api/curation/steps/"} <= set(
        paths
    )


# --- the real worker ------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_worker_curates_the_new_version(worker, api, project):
    src_id = upload(api, project, E2E_PAIRS)
    resp = curate(api, src_id, E2E_STEPS)
    assert resp.status_code == 202
    new_id = resp.json()["id"]

    def done():
        return Dataset.objects.get(pk=new_id).status != "importing"

    wait_for(done, 60, message=f"curation\n{worker.log()[-2000:]}")
    ds = Dataset.objects.get(pk=new_id)
    assert ds.status == "ready", ds.error
    assert ds.row_count == len(E2E_PAIRS) and ds.meta["curation_stats"]["kept"] == 5
    assert PreferencePair.objects.filter(dataset=ds, kept=True).count() == 5


# --- scale ------------------------------------------------------------------------------------------


@pytest.mark.scale
@pytest.mark.timeout(900)
def test_scale_200k_pairs_exact_and_near_dedup(project, alice, tmp_path):
    """200,000 pairs: every 10th prompt repeats an earlier one (case changed), every 10th+3 is an
    earlier one plus a word. Prints the seconds; asserts only the outcome."""
    n = 200_000
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(20000)]
    prompts: list[str] = []
    path = tmp_path / "scale.jsonl"
    with open(path, "w") as f:
        for i in range(n):
            if i % 10 == 0 and i:
                prompt = prompts[i - 5].upper()
            elif i % 10 == 3:
                prompt = prompts[i - 1] + " indeed"
            else:
                prompt = " ".join(rng.choices(vocab, k=rng.randint(25, 60)))
            prompts.append(prompt)
            f.write(
                json.dumps(
                    {
                        "prompt": prompt,
                        "chosen": f"answer {i}",
                        "rejected": f"wrong {i}",
                        "source": f"s{i % 3}",
                    }
                )
                + "\n"
            )
    t0 = time.monotonic()
    src = import_services.dataset_create_for_import(
        user=alice, project=project, name="scale", kind="preference", path=path, filename="scale.jsonl"
    )
    import_services.dataset_import(src, path)
    t1 = time.monotonic()
    new = service.dataset_curate(
        user=alice,
        dataset=src,
        recipe={"name": "dedup", "steps": [{"step": "exact_dedup"}, {"step": "near_dedup"}]},
    )
    ds = service.curation_run(new)
    t2 = time.monotonic()
    stats = ds.meta["curation_stats"]
    print(
        f"\nscale: import {t1 - t0:.1f}s, curation of {n} pairs {t2 - t1:.1f}s "
        f"(load {stats['load_seconds']}s, steps {[s['seconds'] for s in stats['steps']]}, write {stats['write_seconds']}s); dropped {[s['dropped'] for s in stats['steps']]}"
    )
    assert ds.status == "ready" and ds.row_count == n
    assert stats["steps"][0]["dropped"] == n // 10 - 1
    assert stats["steps"][1]["dropped"] >= 0.99 * (n // 10)
    assert stats["steps"][1]["dropped"] <= 1.01 * (n // 10)
    assert PreferencePair.objects.filter(dataset=ds, kept=False).count() == stats["dropped"]
