"""Curation recipes: validation with field paths, JSON round trips, the example recipes."""

import json

import pytest

from webapp.datasets.curation import recipes as r
from webapp.datasets.curation import steps as st


def errors_of(data) -> dict:
    with pytest.raises(r.RecipeInvalid) as exc:
        r.recipe_validate(data)
    return exc.value.errors


def test_errors_carry_field_paths():
    errors = errors_of(
        {
            "name": "x",
            "steps": [
                {"step": "exact_dedup"},
                {"step": "exact_dedup", "key": "answer"},
                {"step": "near_dedup", "threshold": 1.5},
                {"step": "bogus"},
                {"threshold": 0.5},
                {"step": "length"},
                {"step": "length", "min_chosen": 10, "max_chosen": 5},
                {"step": "source_select", "mix": {"a": 1}},
                {"step": "margin_filter", "checkpoint": 3},
                {"step": "top_slice", "sources": ["m"], "score_key": "score", "checkpoint": 2},
                {"step": "top_slice", "sources": ["m"], "fractions": {"math": 1.5}},
                {"step": "near_identical", "shingle": 3, "extra": 1},
                {"step": "contamination", "benchmark": 0},
                {"step": "length_ratio", "max_ratio": "NaN"},
            ],
        }
    )
    assert set(errors) == {
        "steps[1].key",
        "steps[2].threshold",
        "steps[3].step",
        "steps[4].step",
        "steps[5].max_chosen",
        "steps[6].max_chosen",
        "steps[7].total",
        "steps[8].threshold",
        "steps[9].checkpoint",
        "steps[10].fractions.math",
        "steps[11].extra",
        "steps[12].benchmark",
        "steps[13].max_ratio",
    }, errors
    assert "less than or equal to 1" in errors["steps[2].threshold"][0]
    assert "bogus" in errors["steps[3].step"][0]
    assert errors["steps[6].max_chosen"] == ["must be at least min_chosen (10)"]
    assert errors["steps[7].total"] == ["required with mix"]
    assert errors["steps[8].threshold"] == ["Field required"]


def test_top_level_errors():
    assert set(errors_of({"steps": []})) == {"name", "steps"}
    assert set(errors_of({"name": "x", "steps": [{"step": "exact_dedup"}], "colour": 1})) == {"colour"}
    assert set(errors_of([1, 2])) == {"__all__"}
    assert set(errors_of({"name": "a\x00b", "steps": [{"step": "exact_dedup"}]})) == {"name"}
    assert "steps[0].caps.a" in errors_of(
        {"name": "x", "steps": [{"step": "source_select", "caps": {"a": -1}}]}
    )


def test_recipes_round_trip_through_json():
    for example in r.example_recipes():
        recipe = r.recipe_validate(example["recipe"])
        dumped = json.loads(json.dumps(recipe.model_dump(mode="json")))
        assert r.Recipe.model_validate(dumped) == recipe
        assert recipe.name == example["name"]
    # defaults are filled in and survive the trip
    recipe = r.recipe_validate(
        {"name": "d", "steps": [{"step": "near_dedup"}, {"step": "top_slice", "sources": ["m"]}]}
    )
    dumped = recipe.model_dump(mode="json")
    assert dumped["steps"][0] == {
        "step": "near_dedup",
        "threshold": 0.8,
        "num_perm": 128,
        "shingle": 5,
        "seed": 1,
    }
    assert dumped["steps"][1]["score_key"] == "score" and dumped["steps"][1]["fractions"]["*"] == 0.1
    assert r.Recipe.model_validate(dumped) == recipe


def test_the_skywork_example_has_the_papers_steps():
    sky = next(e for e in r.example_recipes() if e["name"] == "skywork-style")["recipe"]
    names = [s["step"] for s in sky["steps"]]
    assert names == [
        "exact_dedup", "near_dedup", "near_identical", "length", "contamination", "top_slice", "consistency",
    ]  # fmt: skip
    top = sky["steps"][5]
    assert top["offsets"] == {"magpie_air": 0.1, "magpie_pro": 0.05}
    assert top["fractions"] == {"math": 0.3, "code": 0.3, "*": 0.1}


def test_json_schema_and_catalogue_cover_every_step():
    schema = r.recipe_json_schema()
    assert set(schema["properties"]) == {"name", "description", "steps"}
    assert set(st.STEPS) == set(r.STEP_MODELS) == {c["step"] for c in r.step_catalogue()}
    assert json.dumps(schema)  # serialisable


def test_step_functions_take_params_as_dicts_or_models():
    rows = [{"prompt": "a"}, {"prompt": "A"}]
    model = r.step_validate({"step": "exact_dedup"})
    assert (
        st.exact_dedup(rows, model)
        == st.exact_dedup(rows, {"step": "exact_dedup"})
        == [None, "exact_duplicate"]
    )
    with pytest.raises(r.RecipeInvalid) as exc:
        r.step_validate({"step": "length_ratio", "max_ratio": 0.5})
    assert "max_ratio" in exc.value.errors
