"""Curation recipes: ``{"name": ..., "steps": [{"step": "<name>", ...params}, ...]}``.

A recipe is a pydantic model whose steps form a discriminated union on ``step``; it round-trips
through JSON (``Recipe.model_validate(recipe.model_dump(mode="json")) == recipe``) and is stored on
the curated dataset version as ``meta.recipe``. ``recipe_validate`` turns pydantic's errors into the
API's field paths (``steps[2].threshold``). Ids in params (``benchmark``, ``checkpoint``) are only
checked for shape here; the service checks they belong to the user's projects."""

from __future__ import annotations

import copy
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise PydanticCustomError("nul_character", "must not contain NUL characters")
    return value


Text = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_no_nul)]
DbId = Annotated[int, Field(ge=1, le=2**62, description="id of an object in one of your projects")]
Fraction = Annotated[float, Field(gt=0, le=1)]
Unscored = Literal["drop", "keep"]


def _conflict(field: str, message: str) -> PydanticCustomError:
    """An error of a cross-field check, reported at ``field`` (see ``_path``)."""
    return PydanticCustomError("invalid_combination", "{message}", {"field": field, "message": message})


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ExactDedup(_Step):
    """Drop pairs whose normalised prompt (Unicode NFKC, case-folded, whitespace collapsed), or
    prompt and chosen response, equals that of an earlier pair."""

    step: Literal["exact_dedup"] = "exact_dedup"
    key: Literal["prompt", "prompt+chosen"] = "prompt"


class NearDedup(_Step):
    """MinHash LSH (datasketch permutations and banding parameters) over word shingles of the
    prompt; pairs that fall in a common LSH bucket are clustered (transitively) and only the first
    pair of each cluster is kept."""

    step: Literal["near_dedup"] = "near_dedup"
    threshold: float = Field(0.8, gt=0, le=1, description="Jaccard similarity the LSH targets")
    num_perm: int = Field(128, ge=16, le=512)
    shingle: int = Field(5, ge=1, le=20, description="words per shingle")
    seed: int = Field(1, ge=0, le=2**31 - 1)


class Length(_Step):
    """Drop pairs whose prompt, chosen or rejected text (in characters) is outside the bounds."""

    step: Literal["length"] = "length"
    min_prompt: int | None = Field(None, ge=0)
    max_prompt: int | None = Field(None, ge=0)
    min_chosen: int | None = Field(None, ge=0)
    max_chosen: int | None = Field(None, ge=0)
    min_rejected: int | None = Field(None, ge=0)
    max_rejected: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _bounds(self):
        values = self.model_dump(exclude={"step"})
        if all(v is None for v in values.values()):
            raise _conflict("max_chosen", "give at least one bound")
        for part in ("prompt", "chosen", "rejected"):
            lo, hi = values[f"min_{part}"], values[f"max_{part}"]
            if lo is not None and hi is not None and lo > hi:
                raise _conflict(f"max_{part}", f"must be at least min_{part} ({lo})")
        return self


class LengthRatio(_Step):
    """Drop pairs where the longer of chosen/rejected is more than ``max_ratio`` times the other."""

    step: Literal["length_ratio"] = "length_ratio"
    max_ratio: float = Field(3.0, ge=1, le=1e6)


class NearIdentical(_Step):
    """Drop pairs whose chosen and rejected responses are nearly the same text: Jaccard similarity
    of their word-shingle sets at or above ``threshold``."""

    step: Literal["near_identical"] = "near_identical"
    threshold: float = Field(0.9, gt=0, le=1)
    shingle: int = Field(3, ge=1, le=10, description="words per shingle")


class SourceSelect(_Step):
    """Choose sources: an include list; per-source caps (a seeded random sample of at most N pairs
    per source); or mix ratios with a target total (quota = total x ratio / sum of ratios, a seeded
    sample; a source with fewer pairs than its quota keeps all of them)."""

    step: Literal["source_select"] = "source_select"
    include: list[Text] | None = Field(None, min_length=1, max_length=1000)
    caps: dict[Text, Annotated[int, Field(ge=0)]] = Field(default_factory=dict, max_length=1000)
    mix: dict[Text, Annotated[float, Field(gt=0, le=1e6)]] | None = Field(None, min_length=1, max_length=1000)
    total: int | None = Field(None, ge=1, le=10**9)
    seed: int = Field(0, ge=0, le=2**31 - 1)

    @model_validator(mode="after")
    def _one_rule(self):
        if self.mix is not None and self.total is None:
            raise _conflict("total", "required with mix")
        if self.total is not None and self.mix is None:
            raise _conflict("mix", "required with total")
        if self.include is None and not self.caps and self.mix is None:
            raise _conflict("include", "give include, caps or mix")
        return self


class Contamination(_Step):
    """Drop pairs whose prompt shares a word n-gram (or, with ``exact``, the whole normalised
    prompt) with a prompt of the ``benchmark`` dataset (a preference set or a problems set)."""

    step: Literal["contamination"] = "contamination"
    benchmark: DbId
    n: int = Field(13, ge=3, le=50, description="words per n-gram")
    exact: bool = True


class MarginFilter(_Step):
    """Drop pairs whose reward margin (chosen - rejected) under ``checkpoint`` is below
    ``threshold``; pairs the checkpoint did not score are dropped or kept per ``unscored``."""

    step: Literal["margin_filter"] = "margin_filter"
    checkpoint: DbId
    threshold: float = Field(ge=-1e12, le=1e12)
    unscored: Unscored = "drop"


class TopSlice(_Step):
    """The Skywork-Reward Magpie selection: among the pairs of ``sources``, rank by score within
    each category (after subtracting ``offsets[source]``) and keep the top ``fractions[category]``;
    categories not named in ``fractions`` are ranked together under ``"*"`` (absent ``"*"``: kept).
    The score is a metadata key (``score_key``, default ``"score"``) or the chosen score of
    ``checkpoint``; pairs of other sources are left alone."""

    step: Literal["top_slice"] = "top_slice"
    sources: list[Text] = Field(min_length=1, max_length=1000)
    fractions: dict[Text, Fraction] = Field(
        default_factory=lambda: {"math": 0.3, "code": 0.3, "*": 0.1}, min_length=1, max_length=1000
    )
    category_key: Text = "category"
    category_map: dict[Text, Text] = Field(
        default_factory=dict, max_length=1000, description="raw category -> category of fractions"
    )
    score_key: Text | None = None
    checkpoint: DbId | None = None
    offsets: dict[Text, Annotated[float, Field(ge=-1e12, le=1e12)]] = Field(
        default_factory=dict, max_length=1000, description="source -> value subtracted from its scores"
    )

    @model_validator(mode="after")
    def _one_score(self):
        if self.score_key is not None and self.checkpoint is not None:
            raise _conflict("checkpoint", "give score_key or checkpoint, not both")
        if self.score_key is None and self.checkpoint is None:
            self.score_key = "score"
        return self


class Consistency(_Step):
    """The Skywork-Reward WildGuard filter: among the pairs of ``sources`` (all when absent), keep
    only those that ``checkpoint`` (a reward model trained on the other sources) ranks correctly,
    margin > 0."""

    step: Literal["consistency"] = "consistency"
    checkpoint: DbId
    sources: list[Text] | None = Field(None, min_length=1, max_length=1000)
    unscored: Unscored = "drop"


StepParams = (
    ExactDedup
    | NearDedup
    | Length
    | LengthRatio
    | NearIdentical
    | SourceSelect
    | Contamination
    | MarginFilter
    | TopSlice
    | Consistency
)
Step = Annotated[StepParams, Field(discriminator="step")]
STEP_MODELS: dict[str, type[_Step]] = {
    m.model_fields["step"].default: m
    for m in (
        ExactDedup, NearDedup, Length, LengthRatio, NearIdentical, SourceSelect, Contamination,
        MarginFilter, TopSlice, Consistency,
    )
}  # fmt: skip


class Recipe(BaseModel):
    """An ordered list of curation steps; each applies to the pairs the previous ones kept."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: Text
    description: Annotated[str, Field(max_length=2000), AfterValidator(_no_nul)] = ""
    steps: list[Step] = Field(min_length=1, max_length=50)


class RecipeInvalid(Exception):
    def __init__(self, errors: dict[str, list[str]]):
        super().__init__("invalid recipe")
        self.errors = errors


def _path(error: dict) -> str:
    loc = list(error["loc"])
    parts: list[str] = []
    i = 0
    while i < len(loc):
        item = loc[i]
        if isinstance(item, int):
            parts.append(f"[{item}]")
            # The discriminated union puts the tag after the list index: steps[2].near_dedup.x
            if i >= 1 and loc[i - 1] == "steps" and i + 1 < len(loc) and loc[i + 1] in STEP_MODELS:
                i += 1
        elif i == 0 and item in STEP_MODELS and len(loc) > 1:
            pass  # the tag of a single step (step_validate)
        elif item != "[key]":
            parts.append(("." if parts else "") + str(item))
        i += 1
    if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
        parts.append(".step")
    if field := (error.get("ctx") or {}).get("field"):
        parts.append(("." if parts else "") + field)
    return "".join(parts) or "__all__"


def _errors(exc: ValidationError) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for error in exc.errors(include_url=False):
        out.setdefault(_path(error), []).append(error["msg"])
    return out


def recipe_validate(data: Any) -> Recipe:
    """A Recipe from JSON-like data, or RecipeInvalid with ``{"steps[2].threshold": [msg]}``."""
    if isinstance(data, Recipe):
        return data
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise RecipeInvalid(_errors(exc)) from None


_step_adapter: TypeAdapter = TypeAdapter(Step)


def step_validate(data: Any) -> StepParams:
    """One step's params from a dict ({"step": ..., ...}); a model passes through."""
    if isinstance(data, _Step):
        return data
    try:
        return _step_adapter.validate_python(data)
    except ValidationError as exc:
        raise RecipeInvalid(_errors(exc)) from None


def recipe_json_schema() -> dict:
    return Recipe.model_json_schema()


def step_catalogue() -> list[dict]:
    """Each step's name, one-line title, description and params schema (for the recipe builder)."""
    out = []
    for name, model in STEP_MODELS.items():
        doc = " ".join((model.__doc__ or "").split())
        out.append(
            {
                "step": name,
                "title": doc.split(". ")[0].rstrip(".") if doc else name,
                "description": doc,
                "schema": model.model_json_schema(),
            }
        )
    return out


# --- example recipes ----------------------------------------------------------------------------
# Ids of benchmarks and checkpoints are placeholders (1) in the API; the curate page fills in the project's
# own (example_ids.example_ids) or leaves the step out.

MAGPIE_SOURCES = ["magpie_ultra", "magpie_pro_llama3.1", "magpie_pro", "magpie_air"]

_EXAMPLES: dict[str, dict] = {
    "skywork-style": {
        "description": "Skywork-Reward's data selection (arXiv 2410.18451, section 3.2 of the seeds spec): "
        "dedup, near-identical pairs, length bounds, RewardBench decontamination, the Magpie top slice per "
        "category (ArmoRM score, Air -0.1, Pro -0.05; top 30% math/code, 10% other) and the WildGuard "
        "consistency filter with an RM trained on the other sources. Replace benchmark (a RewardBench "
        "preference set) and checkpoint (that RM) with your ids.",
        "recipe": {
            "name": "skywork-style",
            "steps": [
                {"step": "exact_dedup", "key": "prompt+chosen"},
                {"step": "near_dedup", "threshold": 0.8, "num_perm": 128, "shingle": 5},
                {"step": "near_identical", "threshold": 0.9},
                {"step": "length", "min_chosen": 1, "max_chosen": 16000, "max_prompt": 16000},
                {"step": "contamination", "benchmark": 1, "n": 13, "exact": True},
                {
                    "step": "top_slice",
                    "sources": MAGPIE_SOURCES,
                    "score_key": "score",
                    "category_key": "category",
                    "category_map": {"Math": "math", "Coding & Debugging": "code"},
                    "offsets": {"magpie_air": 0.1, "magpie_pro": 0.05},
                    "fractions": {"math": 0.3, "code": 0.3, "*": 0.1},
                },
                {"step": "consistency", "checkpoint": 1, "sources": ["wildguardmix"]},
            ],
        },
    },
    "dedup": {
        "description": "Exact and near-duplicate prompts, then chosen/rejected pairs that are nearly the same "
        "text.",
        "recipe": {
            "name": "dedup",
            "steps": [
                {"step": "exact_dedup"},
                {"step": "near_dedup", "threshold": 0.8},
                {"step": "near_identical", "threshold": 0.9},
            ],
        },
    },
    "length-and-margin": {
        "description": "Length bounds and a chosen/rejected length-ratio cap (against length bias), then a "
        "reward-margin floor under a checkpoint (replace its id).",
        "recipe": {
            "name": "length-and-margin",
            "steps": [
                {"step": "length", "min_prompt": 10, "max_chosen": 8000, "max_rejected": 8000},
                {"step": "length_ratio", "max_ratio": 2.5},
                {"step": "margin_filter", "checkpoint": 1, "threshold": 0.5, "unscored": "keep"},
            ],
        },
    },
    "source-mix": {
        "description": "A fixed-size mix of sources (seeded sample): half HelpSteer2, a quarter each "
        "OffsetBias and WildGuardMix.",
        "recipe": {
            "name": "source-mix",
            "steps": [
                {"step": "exact_dedup"},
                {
                    "step": "source_select",
                    "mix": {"helpsteer2": 2, "offsetbias": 1, "wildguardmix": 1},
                    "total": 10000,
                    "seed": 0,
                },
            ],
        },
    },
}


PLACEHOLDER_ID = 1
_NEEDS = {"contamination": ("benchmark", "benchmark"), "consistency": ("checkpoint", "checkpoint"),
          "margin_filter": ("checkpoint", "checkpoint")}  # fmt: skip
_MISSING = {
    "benchmark": "no other ready preference dataset in this project to decontaminate against",
    "checkpoint": "no reward-model checkpoint of this project has scored this dataset yet (score it from "
    "the reward run's page, then reload)",
}


def example_recipes(
    *, benchmark: int | None = PLACEHOLDER_ID, checkpoint: int | None = PLACEHOLDER_ID
) -> list[dict]:
    """``[{"name", "description", "recipe"}]``; every recipe validates.

    Without arguments the ids of benchmarks and checkpoints are placeholders (1). The curate page
    passes the project's real ones (webapp.datasets.curation.example_ids): a step whose id is None
    is left out and the description says why, so an example never names the dataset being curated
    or a checkpoint that cannot score it (the demo's example once kept 0 of 2,048 pairs)."""
    ids = {"benchmark": benchmark, "checkpoint": checkpoint}
    out = []
    for name, ex in _EXAMPLES.items():
        recipe = copy.deepcopy(ex["recipe"])
        description = ex["description"]
        steps, left_out = [], []
        for step in recipe["steps"]:
            need = _NEEDS.get(step["step"])
            if need is None:
                steps.append(step)
            elif ids[need[1]] is None:
                left_out.append(f"{step['step']} ({_MISSING[need[1]]})")
            else:
                steps.append({**step, need[0]: ids[need[1]]})
        if not steps:  # nothing of it applies here
            continue
        if ids != {"benchmark": PLACEHOLDER_ID, "checkpoint": PLACEHOLDER_ID}:  # the ids are real here
            description = re.sub(r" ?Replace [^.]* with your ids\.| \(replace its id\)", "", description)
        if left_out:
            description += " Left out here: " + "; ".join(left_out) + "."
        recipe["steps"] = steps
        out.append({"name": name, "description": description, "recipe": recipe})
    return out
