"""No silent weak sandbox: without the full guards a run is refused with the missing guards named, unless the
operator opts in (ORLAB_SANDBOX_ALLOW_WEAK=1); the guards used are reported for the run to record.

A host without a namespace is simulated with ORLAB_SANDBOX_DISABLE (the guards are really not set up)."""

from __future__ import annotations

import json
import sys

import pytest

from trainers.common.rewards import RewardPool
from trainers.common.sandbox import SandboxUnavailable, require_sandbox, run_python, sandbox_guards
from trainers.common.verifiers.code import verify_code

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sandbox is Linux-only")
ADD = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"
ADD_TESTS = [{"stdin": "1 2", "stdout": "3"}]


@pytest.fixture
def no_weak(monkeypatch):
    monkeypatch.delenv("ORLAB_SANDBOX_ALLOW_WEAK", raising=False)
    monkeypatch.delenv("ORLAB_SANDBOX_DISABLE", raising=False)


@pytest.mark.parametrize(
    ("disable", "named"),
    [
        (("netns",), "network namespace"),
        (("pidns",), "pid namespace"),
        (("mntns",), "mount namespace (read-only root, private work directory)"),
    ],
)
def test_a_missing_guard_refuses_the_run_and_names_it(no_weak, tmp_path, disable, named):
    marker = tmp_path / "ran"
    res = run_python(f"open({str(marker)!r}, 'w').write('ran')\nprint('ran')", disable=disable)
    assert res.status == "error", res
    assert res.detail.startswith("sandbox refused to run the program: missing " + named), res.detail
    assert "ORLAB_SANDBOX_ALLOW_WEAK=1" in res.detail
    assert res.stdout == "" and not marker.exists()
    assert res.guards["mode"] == "weak" and res.guards["missing"] == [named]


def test_opting_in_runs_weak_and_says_so(no_weak, monkeypatch):
    monkeypatch.setenv("ORLAB_SANDBOX_ALLOW_WEAK", "1")
    res = run_python("print('ran')", disable=("netns",))
    assert res.status == "ok", res
    assert res.stdout == "ran\n"
    assert res.weak and res.guards["audit_hook"] and res.guards["missing"] == ["network namespace"]


def test_this_machine_has_the_full_guards(no_weak):
    guards = require_sandbox()
    assert guards["mode"] == "full" and guards["missing"] == [], guards
    assert guards["summary"].startswith("full: netns, pidns, mntns")
    assert guards == json.loads(json.dumps(guards))  # ready to be recorded with a run
    for key in ("network", "filesystem", "identity", "memory", "disk"):
        assert key in guards and guards[key], key


def test_require_sandbox_refuses_without_the_full_guards(no_weak, monkeypatch):
    monkeypatch.setenv("ORLAB_SANDBOX_DISABLE", "netns,pidns")
    with pytest.raises(SandboxUnavailable) as err:
        require_sandbox()
    assert "missing here: network namespace, pid namespace" in str(err.value)
    assert "ORLAB_SANDBOX_ALLOW_WEAK=1" in str(err.value)
    monkeypatch.setenv("ORLAB_SANDBOX_ALLOW_WEAK", "1")
    guards = require_sandbox()
    assert guards["mode"] == "weak" and guards["allow_weak"]
    assert guards["summary"].startswith("WEAK (opted in with ORLAB_SANDBOX_ALLOW_WEAK=1; best effort")
    assert sandbox_guards() == guards


def test_code_scoring_refuses_to_start_without_the_full_guards(no_weak, monkeypatch):
    """(The pools fork: a fork server started earlier would hand its workers its own environment.)"""
    monkeypatch.setenv("ORLAB_SANDBOX_DISABLE", "mntns")
    verdict = verify_code(ADD, ADD_TESTS)  # scored directly: an error verdict naming the missing guard
    assert verdict.verdict == "error" and "missing mount namespace" in verdict.detail, verdict
    with RewardPool(processes=1, item_timeout_s=60, context="fork") as pool:
        assert pool.score_batch([("math", r"\boxed{1}", "1")])[0].verdict == "correct"  # no code: no sandbox
        with pytest.raises(SandboxUnavailable, match="mount namespace"):
            pool.score_batch([("code", ADD, ADD_TESTS)])
        assert pool.sandbox is None
    monkeypatch.setenv("ORLAB_SANDBOX_ALLOW_WEAK", "1")
    with RewardPool(processes=1, item_timeout_s=60, context="fork") as pool:
        assert [v.verdict for v in pool.score_batch([("code", ADD, ADD_TESTS)])] == ["correct"]
        assert pool.sandbox["mode"] == "weak" and pool.sandbox["missing"] == [
            "mount namespace (read-only root, private work directory)"
        ]
