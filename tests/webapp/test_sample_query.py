"""Issue 14's sample query (webapp.selectors.samples), shared by the samples page and the API: each
filter, word and substring search, sorting, the API's 400s naming the parameter, the group and token
endpoints, the pages, and another team's run being a 404 everywhere."""

from __future__ import annotations

import pytest
from django.http import QueryDict

from webapp.errors import ServiceError
from webapp.runs import services
from webapp.runs.models import Sample
from webapp.runs.samples import samples_record
from webapp.selectors.samples import SampleQuery, like_pattern

pytestmark = pytest.mark.django_db

P_SIX = "What is 6 times 7? Put the answer in a box."
P_PCT = "A shop sells 50% of its apples_per_day; what share is left?"


def _member(step, group, member, reward, verdict, completion, *, prompt=P_SIX, **kw):
    return {
        "step": step,
        "prompt": prompt,
        "expected_answer": "42" if prompt == P_SIX else "50%",
        "data_source": "arith" if prompt == P_SIX else "shop",
        "completion": completion,
        "reward": reward,
        "advantage": kw.pop("advantage", 0.0),
        "verdict": verdict,
        "length": kw.pop("length", 10 + member),
        "group_index": group,
        "member_index": member,
        "finish_reason": kw.pop("finish_reason", "stop"),
        "client_key": f"s{step}g{group}m{member}{kw.get('phase', 'train')[0]}",
        **kw,
    }


@pytest.fixture
def run(alice, project):
    run = services.run_create(user=alice, project=project, name="rl", kind="external", config={})
    rows = [
        # step 0, group 0: mixed rewards -> kept
        _member(0, 0, 0, 1.0, "correct", "six sevens make \\boxed{42}", advantage=1.0, extracted_answer="42",
                rewards={"accuracy": 1.0, "format": 0.0}),
        _member(0, 0, 1, 0.0, "wrong", "I think it is \\boxed{420}", advantage=-1.0, extracted_answer="420"),
        _member(0, 0, 2, 1.0, "correct", "multiply: \\boxed{42}", advantage=1.0, extracted_answer="42"),
        _member(0, 0, 3, 0.0, "no_answer", "seven sixes are " + "many " * 40, advantage=-1.0, length=512,
                truncated=True, finish_reason="length"),
        # step 0, group 1: nothing correct, equal rewards -> unsolved_all
        _member(0, 1, 0, 0.0, "wrong", "half: axb, 25 percent", prompt=P_PCT),
        _member(0, 1, 1, 0.0, "wrong", "a_b is the answer", prompt=P_PCT),
        # step 1, group 0: all correct -> solved_all
        _member(1, 0, 0, 1.0, "correct", "\\boxed{42} again", extracted_answer="42"),
        _member(1, 0, 1, 1.0, "correct", "clearly \\boxed{42}", extracted_answer="42"),
        # step 1, group 1: a high reward with a wrong verdict (reward hacking?), kept
        _member(1, 1, 0, 0.9, "wrong", "50 apples remain, so 50% stays", prompt=P_PCT, advantage=0.5,
                extracted_answer="50"),
        _member(1, 1, 1, 0.1, "wrong", "none remain", prompt=P_PCT, advantage=-0.5),
        # an evaluation rollout of the same prompt
        _member(1, 0, 0, 1.0, "correct", "eval says \\boxed{42}", phase="eval", checkpoint_step=1,
                tokens={"offsets": [0, 5, 10], "logprobs": [-0.1, -2.0, -0.5], "entropies": [0.2, 1.5, 0.7],
                        "engine_logprobs": [-0.1, -2.5, -0.5]}),
    ]  # fmt: skip
    assert samples_record(run, rows) == len(rows)
    return run


@pytest.fixture
def client_alice(client, alice):
    client.force_login(alice)
    return client


@pytest.fixture
def client_bob(bob):
    from django.test import Client

    c = Client()
    c.force_login(bob)
    return c


def keys(run, query: str = "", *, strict: bool = False) -> list[str]:
    state = SampleQuery(QueryDict(query), run, strict=strict)
    qs = state.queryset()
    if state.bounded_scan:  # a substring search: SQL selects candidates, the paginator's scan rechecks
        ids, finished = state.contains_scan(10_000)
        assert finished
        by_id = dict(Sample.objects.filter(pk__in=ids).values_list("id", "client_key"))
        return [by_id[i] for i in ids]
    return list(qs.values_list("client_key", flat=True))


FILTERS = [
    ("step=1&phase=train", ["s1g0m0t", "s1g0m1t", "s1g1m0t", "s1g1m1t"]),
    ("phase=eval", ["s1g0m0e"]),
    ("step_min=1&step_max=1&verdict=wrong", ["s1g1m0t", "s1g1m1t"]),
    ("verdict=no_answer,correct&step_max=0", ["s0g0m0t", "s0g0m2t", "s0g0m3t"]),
    ("truncated=true", ["s0g0m3t"]),
    ("finish_reason=length", ["s0g0m3t"]),
    ("min_len=12&max_len=600", ["s0g0m2t", "s0g0m3t"]),
    ("high_reward_wrong=0.5", ["s1g1m0t"]),
    ("data_source=shop&step=0", ["s0g1m0t", "s0g1m1t"]),
    ("group_status=solved_all&phase=train", ["s1g0m0t", "s1g0m1t"]),
    ("group_status=unsolved_all", ["s0g1m0t", "s0g1m1t"]),
    ("group_status=zero_variance&phase=train", ["s0g1m0t", "s0g1m1t", "s1g0m0t", "s1g0m1t"]),
    ("group_status=kept&step=0", ["s0g0m0t", "s0g0m1t", "s0g0m2t", "s0g0m3t"]),
]


def test_each_filter_selects_its_samples(run):
    for query, expected in FILTERS:
        assert keys(run, query) == expected, query


def test_group_status_is_derived_when_no_one_stored_it(run):
    """Grouped rows without a group status (column empty: none since migration 0012) are classed from
    their group's members."""
    for s in Sample.objects.filter(run=run):
        s.extra = {k: v for k, v in s.extra.items() if k != "group_status"}
        s.group_status = ""
        s.save(update_fields=["extra", "group_status"])
    assert keys(run, "group_status=solved_all&phase=train") == ["s1g0m0t", "s1g0m1t"]
    assert keys(run, "group_status=unsolved_all") == ["s0g1m0t", "s0g1m1t"]
    assert keys(run, "group_status=kept&step=1") == ["s1g1m0t", "s1g1m1t"]


def test_word_and_substring_search_cover_completion_and_prompt(run):
    # a word of the completions only
    assert keys(run, "q=multiply") == ["s0g0m2t"]
    # a word of one prompt: every sample of it
    assert keys(run, "q=apples_per_day") == ["s0g1m0t", "s0g1m1t", "s1g1m0t", "s1g1m1t"]
    # web-search syntax: a phrase, and a word left out
    assert keys(run, 'q="six sevens"') == ["s0g0m0t"]
    assert keys(run, "q=remain -apples&step=1") == ["s1g1m1t"]
    assert keys(run, "q=zebra") == []
    # substring search takes the pattern literally
    assert like_pattern("50%_\\") == "%50\\%\\_\\\\%"
    assert keys(run, "contains=\\boxed{42}&phase=train") == ["s0g0m0t", "s0g0m2t", "s1g0m0t", "s1g0m1t"]
    assert keys(run, "contains=\\BOXED{420}") == ["s0g0m1t"]
    assert keys(run, "contains=50%") == ["s0g1m0t", "s0g1m1t", "s1g1m0t", "s1g1m1t"]  # the prompt has it
    assert keys(run, "contains=a_b") == ["s0g1m1t"]  # _ is no wildcard: not "axb"


def test_substring_search_prefilters_on_whole_words_and_falls_back_to_a_scan(run):
    """Completions have no trigram index: the literal's whole words prefilter through the full-text
    index, ILIKE rechecks; a pattern cutting words still finds its rows (a prefix or a bounded scan)."""
    from django.db import connection

    def tsquery(text):
        return SampleQuery(QueryDict(f"contains={text}"), run).contains_tsquery()

    if connection.vendor == "postgresql":
        assert tsquery("\\boxed{42}") == "'boxed' & '42'"  # both stand between separators
        assert tsquery("oxed{4") == "'4':*"  # "oxed" may be a tail; "4" may be a head
        assert tsquery("multiply: \\boxed") == "'boxed':*"  # the first word may be a tail
        assert tsquery("oxe") == ""  # nothing to prefilter on: the bounded scan
    assert keys(run, "contains=oxed{4&phase=train") == ["s0g0m0t", "s0g0m1t", "s0g0m2t", "s1g0m0t", "s1g0m1t"]
    assert keys(run, "contains=oxed{42}&ordering=-reward&phase=train") == [
        "s0g0m0t",
        "s0g0m2t",
        "s1g0m0t",
        "s1g0m1t",
    ]
    assert keys(run, "contains=ixes ar") == ["s0g0m3t"]
    assert keys(run, "contains=ultipl") == ["s0g0m2t"]
    assert keys(run, "contains=it is \\boxed{42") == ["s0g0m1t"]
    assert keys(run, "contains=s the answer") == ["s0g1m1t"]
    assert keys(run, "contains=, 25 percent") == ["s0g1m0t"]
    assert keys(run, "contains=%s is") == []  # % is literal
    assert keys(run, "contains=a%b") == []
    assert keys(run, "contains=a_b is") == ["s0g1m1t"]


SORTS = [
    ("-reward", ["s0g0m0t", "s0g0m2t", "s1g0m0t", "s1g0m1t", "s1g1m0t"]),
    ("advantage", ["s0g0m1t", "s0g0m3t", "s1g1m1t", "s0g1m0t", "s0g1m1t"]),
    ("-length", ["s0g0m3t", "s0g0m2t", "s0g0m1t", "s0g1m1t", "s1g0m1t"]),
    ("-step", ["s1g1m1t", "s1g1m0t", "s1g0m1t", "s1g0m0e", "s1g0m0t"]),  # the reverse of step
]


def test_sorting(run):
    for ordering, expected in SORTS:
        query = f"ordering={ordering}&phase=train" if ordering != "-step" else "ordering=-step"
        assert keys(run, query)[:5] == expected, ordering


BAD = [
    ("phase=test", "phase"),
    ("verdict=right", "verdict"),
    ("truncated=yes", "truncated"),
    ("finish_reason=eos", "finish_reason"),
    ("group_status=half", "group_status"),
    ("high_reward_wrong=nan", "high_reward_wrong"),
    ("min_len=-1", "min_len"),
    ("max_len=x", "max_len"),
    ("step_min=5&step_max=2", "step_max"),
    ("contains=ab", "contains"),
    ("ordering=prompt", "ordering"),
    ("phase=train&phase=eval", "phase"),
    ("step=", "step"),
]


def test_the_api_names_a_bad_parameter(api, run):
    for query, field in BAD:
        with pytest.raises(ServiceError) as exc:
            SampleQuery(QueryDict(query), run, strict=True)
        assert list(exc.value.field_errors) == [field], query
        resp = api.get(f"/api/runs/{run.id}/samples/?{query}")
        assert resp.status_code == 400, (query, resp.content)
        assert list(resp.json()["errors"]) == [field], query
    # a NUL: the selector names q; the API's middleware refuses any NUL in a query string first
    with pytest.raises(ServiceError) as exc:
        SampleQuery(QueryDict("q=a%00b"), run, strict=True)
    assert list(exc.value.field_errors) == ["q"]
    assert api.get(f"/api/runs/{run.id}/samples/?q=a%00b").status_code == 400


def test_the_page_ignores_a_bad_parameter_and_says_so(client_alice, run):
    resp = client_alice.get(f"/runs/{run.id}/samples/?phase=test&verdict=wrong&step=1")
    assert resp.status_code == 200
    text = resp.content.decode()
    assert 'data-testid="sample-query-errors"' in text and "phase" in text
    assert text.count('data-testid="sample-row"') == 2


def test_the_api_list_carries_the_new_fields(api, run):
    page = api.get(
        f"/api/runs/{run.id}/samples/?step=0&group_status=kept&ordering=-reward&page_size=2"
    ).json()
    assert page["count"] == 4 and page["count_capped"] is False
    first = page["results"][0]
    assert first["prompt"] == P_SIX and first["expected_answer"] == "42"
    assert first["rewards"] == {"accuracy": 1.0, "format": 0.0}
    assert (first["group_index"], first["member_index"], first["phase"]) == (0, 0, "train")
    assert first["has_tokens"] is False
    assert api.get(f"/api/runs/{run.id}/samples/?phase=eval").json()["results"][0]["has_tokens"] is True


def test_the_group_endpoint_and_page(api, client_alice, run):
    g = api.get(f"/api/runs/{run.id}/samples/groups/1/0/").json()
    assert (g["phase"], g["phases"], g["n"], g["solved"], g["status"]) == (
        "train",
        ["train", "eval"],
        2,
        2,
        "solved_all",
    )
    assert g["reason"].startswith("filtered: solved 2/2") and g["expected_answer"] == "42"
    assert g["prev_group"] is None and g["next_group"] == 1
    assert [m["member_index"] for m in g["members"]] == [0, 1]
    assert api.get(f"/api/runs/{run.id}/samples/groups/1/0/?phase=eval").json()["n"] == 1
    assert api.get(f"/api/runs/{run.id}/samples/groups/1/0/?phase=x").status_code == 400
    assert api.get(f"/api/runs/{run.id}/samples/groups/7/0/").status_code == 404
    text = client_alice.get(f"/runs/{run.id}/samples/group/0/0/").content.decode()
    assert text.count('data-testid="group-member"') == 4 and 'data-status="kept"' in text


def test_the_tokens_endpoint_and_page(api, client_alice, run):
    sample = Sample.objects.get(run=run, client_key="s1g0m0e")
    t = api.get(f"/api/runs/{run.id}/samples/{sample.id}/tokens/").json()
    assert [x["text"] for x in t["tokens"]] == ["eval ", "says ", "\\boxed{42}"]
    assert t["top_entropy"][0]["i"] == 1 and t["top_entropy"][0]["entropy"] == pytest.approx(1.5, abs=1e-2)
    assert t["gap"]["max_abs"] == pytest.approx(0.5, abs=1e-2) and t["top_gap"][0]["i"] == 1
    other = Sample.objects.get(run=run, client_key="s1g0m1t")
    assert api.get(f"/api/runs/{run.id}/samples/{other.id}/tokens/").status_code == 404
    text = client_alice.get(f"/runs/{run.id}/samples/{sample.id}/tokens/?color=logprob").content.decode()
    assert 'data-color="logprob"' in text and text.count('class="tok"') == 3


def test_another_teams_run_is_404_everywhere(bob_api, client_bob, run):
    sample = Sample.objects.filter(run=run).first()
    for url in (
        f"/api/runs/{run.id}/samples/",
        f"/api/runs/{run.id}/samples/groups/0/0/",
        f"/api/runs/{run.id}/samples/{sample.id}/tokens/",
    ):
        assert bob_api.get(url).status_code == 404, url
    for url in (
        f"/runs/{run.id}/samples/",
        f"/runs/{run.id}/samples/group/0/0/",
        f"/runs/{run.id}/samples/{sample.id}/tokens/",
    ):
        assert client_bob.get(url).status_code == 404, url


def test_a_search_pages_through_its_matches(api, run):
    """Whichever plan the search takes (walk: counts what it saw; index: a capped count), the pages
    hold every match once, and a page past the last is a 404."""
    url = f"/api/runs/{run.id}/samples/?q=apples_per_day&page_size=3"
    first = api.get(url).json()
    assert len(first["results"]) == 3 and first["next"] and first["count"] >= 4
    second = api.get(url + "&page=2").json()
    assert len(second["results"]) == 1 and second["next"] is None and second["count"] == 4
    seen = [r["id"] for r in first["results"] + second["results"]]
    assert len(set(seen)) == 4
    assert api.get(url + "&page=3").status_code == 404
