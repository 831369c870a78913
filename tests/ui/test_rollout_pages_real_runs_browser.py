"""Issue 14's rollout pages in headless Chromium on samples the REAL trainers produced (issue 14, "done
when": each view works on the demo's RL and DAPO runs): the RL trainer (test_rollout_samples' tiny
policy taught to answer 1-3, so groups come out mixed, solved and unsolved) and the DAPO trainer
(test_dapo_compute's short run: a group is the candidate steps sampled for one state), each stored
through the worker's real path (workers.sinks.DbSink, as a Celery worker's run stores them), then every
view opened: the samples list (word search + filter, state in the URL), a group, a token view, one
prompt over training (evaluation rollouts apart, a diff of two steps), the prompt x step matrix and its
CSV, the distributions page. Expected numbers are read from the database before the browser starts
(an ORM call after Playwright starts its event loop opens a second connection that outlives the test).

The trainers run once per module (module-scoped, in-memory sink, one torch thread); each test replays
one run's samples through a DbSink into that test's database. The configs are the trainer tests'
smallest ones, not the demo presets (minutes on CPU); the DAPO one renders prompts with the tiny chat
template where the demo preset uses raw prompts, so both prompt forms are browsed (RL: templated)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from tests.trainers.test_dapo_compute import SHORT
from tests.trainers.test_rollout_samples import rl_run, setup  # noqa: F401 (module-scoped fixtures)
from tests.ui.test_prompt_pages_browser import rendered
from tests.ui.test_run_page_browser import login, new_page
from trainers.base import MemorySink, get_spec
from trainers.common.tiny import build_tiny_model

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Steadier on a shared box while the module's trainers run; no result depends on it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def dapo_run(tmp_path_factory):
    """test_dapo_compute's short DAPO config run whole by the trainer (one iteration: generate,
    evaluate, critic, actor, evaluate), in memory."""
    root = tmp_path_factory.mktemp("dapo-samples")
    tiny = build_tiny_model(root / "tiny", seed=3, hidden=32, layers=2)
    spec = get_spec("dapo")
    (root / "run").mkdir()
    sink = MemorySink(workdir=root / "run")
    spec.train_fn()(spec.validate({**SHORT, "model_path": str(tiny)}), sink)
    return sink


def stored(alice, project, kind: str, sink: MemorySink):
    """The trainer's samples, logged step by step through the worker's sink into a new run."""
    from webapp.runs.models import Run
    from workers.sinks import DbSink

    run = Run.objects.create(
        project=project,
        name=f"{kind} (real trainer)",
        kind=kind,
        status="running",
        created_by=alice,
        attempt=1,
    )
    db_sink = DbSink(run.id, 1)
    try:
        for step, sample in sink.samples:
            db_sink.log_samples(step, [sample])
    finally:
        db_sink.close()
    return run


def expectations(run) -> dict:
    """What each page should show, read from the database (the pages' selectors are not used)."""
    from django.db import connection

    from webapp.runs.models import Sample
    from webapp.runs.samples import decode_tokens

    samples = list(Sample.objects.filter(run=run).select_related("prompt_ref").order_by("step", "id"))
    train = [s for s in samples if s.phase == "train"]
    groups: dict[tuple[int, int], list] = {}
    for s in train:
        if s.group_index is not None:
            groups.setdefault((s.step, s.group_index), []).append(s)
    # a word of a kept group's completion, counted over prompt and completion as PostgreSQL matches it
    kept = next(s for s in train if s.group_status == "kept")
    with connection.cursor() as cur:
        cur.execute("SELECT (tsvector_to_array(to_tsvector('simple', %s)))[1]", [kept.completion])
        word = cur.fetchone()[0]
        # the completions are compressed (webapp.runs.sample_text): matched here on the decoded text
        kept_rows = [s for s in train if s.group_status == "kept"]
        cur.execute(
            """SELECT count(*) FROM unnest(%s::text[], %s::text[]) AS u(completion, prompt)
                WHERE to_tsvector('simple', u.completion) @@ websearch_to_tsquery('simple', %s)
                   OR to_tsvector('simple', u.prompt) @@ websearch_to_tsquery('simple', %s)""",
            [
                [s.completion for s in kept_rows],
                [s.prompt_ref.text if s.prompt_ref_id else s.prompt for s in kept_rows],
                word,
                word,
            ],
        )
        word_matches = cur.fetchone()[0]
    with_tokens = next(s for s in train if hasattr(s, "tokens"))
    tokens = decode_tokens(with_tokens.tokens)
    offsets = [*tokens["offsets"], len(with_tokens.completion)]
    pieces = [with_tokens.completion[a:b] for a, b in zip(offsets, offsets[1:], strict=False)]
    top = max(tokens["entropies"])
    # the prompt seen at the most steps, training and evaluation together
    steps_of: dict[int, set] = {}
    for s in samples:
        if s.prompt_ref_id is not None:
            steps_of.setdefault(s.prompt_ref_id, set()).add((s.phase, s.step))
    prompt_id = max(steps_of, key=lambda p: (len({ph for ph, _ in steps_of[p]}), len(steps_of[p]), -p))
    prompt_verdicts: dict[tuple[str, int], set] = {}
    for s in samples:
        if s.prompt_ref_id == prompt_id:
            prompt_verdicts.setdefault((s.phase, s.step), set()).add(s.verdict or "no verdict")
    solve: dict[tuple[int, int], list[int]] = {}
    for s in train:
        if s.prompt_ref_id is not None:
            cell = solve.setdefault((s.prompt_ref_id, s.step), [0, 0])
            cell[0] += s.verdict == "correct"
            cell[1] += 1
    train_steps = sorted({s.step for s in train})
    # zero-variance share (webapp.selectors.prompts' definition): the rollouts of a step whose prompt's
    # rollouts at that step all have one reward (a single rollout too), over the step's rollouts
    by_prompt: dict[tuple[int, int], list] = {}
    for s in train:
        by_prompt.setdefault((s.step, s.prompt_ref_id), []).append(s)
    zero_variance = []

    def flat(members) -> bool:
        rewards = [m.reward for m in members if m.reward is not None]
        if rewards:
            return min(rewards) == max(rewards)
        return sum(m.verdict == "correct" for m in members) in (0, len(members))

    for st in train_steps:
        cells = [v for (step, _), v in by_prompt.items() if step == st]
        flat_rollouts = sum(len(v) for v in cells if flat(v))
        zero_variance.append(round(flat_rollouts / sum(len(v) for v in cells), 6))
    return {
        "word": word,
        "word_matches": word_matches,
        "groups": {k: [(m.pk, m.member_index, m.verdict, m.reward, m.advantage, m.group_status, m.completion,
                        m.extra) for m in sorted(v, key=lambda m: m.member_index)] for k, v in groups.items()},
        "token_sample": (with_tokens.pk, len(tokens["offsets"]), with_tokens.length, with_tokens.completion),
        "top_tokens": {p.strip() for p, e in zip(pieces, tokens["entropies"], strict=False) if e == top},
        "has_engine_logprobs": "engine_logprobs" in tokens,
        "prompt": (prompt_id, sorted(steps_of[prompt_id])),
        "prompt_verdicts": prompt_verdicts,
        "solve": {k: v[0] / v[1] for k, v in solve.items()},
        "train_prompts": len({p for p, _ in solve}),
        "train_steps": train_steps,
        "zero_variance": zero_variance,
        "truncation": [round(sum(s.truncated for s in train if s.step == st)
                             / sum(1 for s in train if s.step == st), 6) for st in train_steps],
    }  # fmt: skip


@pytest.fixture(params=["rl", "dapo"])
def real_run(request, alice, project, live_server):
    sink = request.getfixturevalue("rl_run" if request.param == "rl" else "dapo_run")
    run = stored(alice, project, request.param, sink)
    return request.param, run, expectations(run)


def test_every_rollout_view_on_a_real_trainer_run(live_server, real_run, browser):
    kind, run, want = real_run
    errors: list[str] = []
    page = new_page(browser, errors)
    base = f"/runs/{run.pk}"

    # the samples list: a word of a kept group's completion, training rollouts of kept groups only; the state in the URL
    login(page, live_server.url, f"{base}/samples/")
    assert page.locator('[data-testid="sample-row"]').count() > 0
    page.fill('[data-testid="sample-q"]', want["word"])
    page.select_option('[data-testid="sample-group-status"]', "kept")
    page.select_option('[data-testid="sample-phase"]', "train")
    page.click('[data-testid="sample-filter-submit"]')
    page.wait_for_url(re.compile(r"group_status=kept"))
    assert f"q={want['word']}" in page.url and "phase=train" in page.url
    count = page.inner_text('[data-testid="sample-count"]')
    assert count.split()[0] == str(want["word_matches"]), count
    rows = page.locator('[data-testid="sample-row"]')
    assert rows.count() == min(want["word_matches"], 50)

    # its first row's group: the members side by side, as the trainer logged them
    page.locator('[data-testid="group-link"]').first.click()
    page.wait_for_url(re.compile(rf"{base}/samples/group/\d+/\d+/"))
    step, group = (int(x) for x in re.search(r"/group/(\d+)/(\d+)/", page.url).groups())
    members = want["groups"][(step, group)]
    shown = page.locator('[data-testid="group-member"]')
    assert shown.count() == len(members) >= 2
    assert page.get_attribute('[data-testid="group-status"]', "data-status") == members[0][5] == "kept"
    solved = sum(m[2] == "correct" for m in members)
    assert page.inner_text('[data-testid="group-solved"]') == f"{solved}/{len(members)}"
    for i, (pk, _, verdict, reward, advantage, _, completion, extra) in enumerate(members):
        card = shown.nth(i)
        assert card.get_attribute("data-id") == str(pk)
        assert card.locator('[data-testid="member-verdict"]').inner_text() == (verdict or "—")
        assert float(card.locator('[data-testid="member-reward"]').inner_text()) == pytest.approx(
            reward, abs=5e-4
        )
        assert float(card.locator('[data-testid="member-advantage"]').inner_text()) == pytest.approx(
            advantage, abs=5e-4
        )
        assert card.locator('[data-testid="member-completion"]').inner_text() == completion
        if kind == "dapo":  # a DAPO group: the candidate next steps of one state
            assert completion.startswith(members[0][7]["state"]) and extra["state"] == members[0][7]["state"]
    if kind == "rl":  # kept: the rewards differ, the advantages sum to zero
        assert 0 < solved < len(members)
        assert abs(sum(m[4] for m in members)) < 1e-3

    # a sample with token arrays: one span per token, the highest-entropy tokens listed
    pk, n_tokens, length, completion = want["token_sample"]
    page.goto(f"{live_server.url}{base}/samples/{pk}/tokens/")
    assert page.get_attribute('[data-testid="token-text"]', "data-color") == "entropy"
    # one span per token (text before the first token, e.g. a DAPO state, stays visible unmarked)
    assert (
        page.locator('[data-testid="token-text"] span.tok:not([data-i="-1"])').count() == n_tokens == length
    )
    assert page.inner_text('[data-testid="token-text"]') == completion
    first = page.locator('[data-testid="top-entropy-row"]').first.inner_text()
    assert any(t in first for t in want["top_tokens"]), (first, want["top_tokens"])
    assert page.locator('[data-testid="no-gap"]').count() == (0 if want["has_engine_logprobs"] else 1)
    page.click('[data-testid="color-logprob"]')
    page.wait_for_url(re.compile(r"color=logprob"))
    assert page.get_attribute('[data-testid="token-text"]', "data-color") == "logprob"

    # the prompt x step matrix, its counts and its CSV (every cell against the database)
    page.goto(f"{live_server.url}{base}/prompts/")
    assert rendered(page, "matrix-chart") == want["train_prompts"]  # one heatmap row per prompt
    assert rendered(page, "counts-chart") == len(want["train_steps"])
    assert rendered(page, "zero-variance-chart") == len(want["train_steps"])
    shares = page.evaluate(
        "() => Array.from(document.querySelector('[data-testid=zero-variance-chart]').data[0].y)"
    )
    assert [round(x, 6) for x in shares] == want["zero_variance"]
    counts = [
        int(page.inner_text(f'[data-testid="count-{c}"]')) for c in ("saturated", "learning", "unsolved")
    ]
    assert sum(counts) == want["train_prompts"]
    with page.expect_download() as download:
        page.click('[data-testid="matrix-csv"]')
    lines = Path(download.value.path()).read_text().splitlines()
    assert lines[0] == ",".join(["prompt_id", "first_solved_step", *map(str, want["train_steps"])])
    assert len(lines) == 1 + want["train_prompts"]
    for line in lines[1:]:
        prompt, _, *cells = line.split(",")
        for st, cell in zip(want["train_steps"], cells, strict=True):
            rate = want["solve"].get((int(prompt), st))
            assert (cell == "") == (rate is None) and (rate is None or float(cell) == round(rate, 4)), line

    # one prompt over training: training and evaluation rollouts apart, a diff of its first and last steps
    prompt_id, seen = want["prompt"]
    (pa, sa), (pb, sb) = seen[0], seen[-1]
    page.goto(f"{live_server.url}{base}/prompts/{prompt_id}/?a={pa}:{sa}&b={pb}:{sb}")
    phases = [ph for ph in ("train", "eval") if any(p == ph for p, _ in seen)]
    # RL evaluates on its training problems (both kinds of rollout); the DAPO config, like the demo's,
    # evaluates on held-out problems, whose history is their evaluation rollouts only
    assert len(phases) == (2 if kind == "rl" else 1)
    assert rendered(page, "history-chart") == len(phases)
    assert page.get_attribute('[data-testid="history-chart"]', "data-traces") == ",".join(
        {"train": "training rollouts", "eval": "evaluation rollouts"}[ph] for ph in phases
    )
    assert page.input_value('[data-testid="diff-step-a"]') == f"{pa}:{sa}"
    assert page.input_value('[data-testid="diff-step-b"]') == f"{pb}:{sb}"
    for side, key in (("a", (pa, sa)), ("b", (pb, sb))):
        verdict = page.inner_text(f'[data-testid="diff-verdict-{side}"]')
        assert any(v in verdict for v in want["prompt_verdicts"][key]), (verdict, key)
    assert "% similar" in page.inner_text('[data-testid="diff-summary"]')

    # the distributions: a truncation rate per training step, length and reward histograms
    page.goto(f"{live_server.url}{base}/distributions/")
    assert rendered(page, "truncation-chart") == len(want["train_steps"])
    assert rendered(page, "length-chart") == len(want["train_steps"])
    assert rendered(page, "reward-chart") == len(want["train_steps"])
    rates = page.evaluate(
        "() => Array.from(document.querySelector('[data-testid=truncation-chart]').data[0].y)"
    )
    assert rates == want["truncation"]
    page.close()
    assert not errors, errors


def test_dapo_logs_every_training_rollout_under_its_rendered_prompt(dapo_run):
    train = [s for _, s in dapo_run.samples if s.get("phase", "train") == "train"]
    candidates = [s for s in train if "group_index" in s]
    assert candidates and all(s["prompt"].startswith("<bos>user: ") for s in candidates)
    # every training rollout: the prompt as the policy read it, with the answer it is graded against
    stray = [
        s["prompt"] for s in train if not s["prompt"].startswith("<bos>user: ") or "expected_answer" not in s
    ]
    assert not stray, stray
