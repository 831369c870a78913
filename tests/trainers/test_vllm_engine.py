"""The vLLM rollout engine. vLLM cannot be installed on the CPU machines (it links libtorch_cuda) and no
GPU host available to the project has it, so on the CPU this checks:

* its pure helpers: context length, stage reachability, batch seeds, weight buckets (bf16, bounded,
  lazily cast, together equal to the model), sampling parameters, output conversion;
* its call sequence against vLLM's documented ``LLM`` API (``sleep``, ``wake_up(tags=...)``,
  ``apply_model``, ``collective_rpc``, ``reset_prefix_cache``, ``generate``), on a stand-in that
  records calls and holds the loaded weights (plain objects shaped like vLLM 0.32's RequestOutput /
  CompletionOutput / Logprob).

On a CUDA host with vllm installed the real engine runs on a saved tiny model (never run so far: no
such host). Without CUDA or vllm that test is skipped with the reason."""

from __future__ import annotations

import json
import math
import os
import sys
import types
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from trainers.common import vllm_engine
from trainers.common.models import load_policy
from trainers.common.rollout import RolloutEngine, SamplingConfig
from trainers.common.tiny import build_tiny_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    directory = build_tiny_model(tmp_path_factory.mktemp("vllm") / "tiny", seed=0)
    return directory, *load_policy(directory)


def sample(index, tokens, finish, logprobs="per-token"):
    lps = [{t: SimpleNamespace(logprob=-0.25 * (i + 1))} for i, t in enumerate(tokens)]
    return SimpleNamespace(
        index=index, token_ids=tokens, finish_reason=finish, logprobs=lps if logprobs else None
    )


# --- pure helpers (CPU) --------------------------------------------------------------------------


def test_max_model_len_is_the_longest_prompt_plus_the_longest_generation():
    assert vllm_engine.max_model_len(2048, [8192, 16384, 32768]) == 2048 + 32768
    assert vllm_engine.max_model_len(512, [40]) == 552
    for bad in [(0, [8]), (8, []), (8, [0])]:
        with pytest.raises(ValueError):
            vllm_engine.max_model_len(*bad)


def test_reachable_stage_lengths_skip_stages_a_run_never_enters():
    stages = [(780, 8192), (1740, 16384), (10**9, 32768)]  # OR1 7B's 8K -> 16K -> 32K
    assert vllm_engine.reachable_stage_lengths(stages, steps=100) == [8192]
    assert vllm_engine.reachable_stage_lengths(stages, steps=780) == [8192]
    assert vllm_engine.reachable_stage_lengths(stages, steps=781) == [8192, 16384]
    assert vllm_engine.reachable_stage_lengths(stages, steps=5000) == [8192, 16384, 32768]
    # past the last until_step the last stage goes on (rl.train.stage_at)
    assert vllm_engine.reachable_stage_lengths([(10, 64), (20, 128)], steps=50) == [64, 128]
    assert vllm_engine.reachable_stage_lengths([(10, 64)], steps=0) == [64]


def test_batch_seed_is_deterministic_and_differs_across_ranks_and_seeds():
    seeds = {vllm_engine.batch_seed(s, r) for s in range(20) for r in range(8)}
    assert len(seeds) == 160 and all(0 <= s < 2**63 for s in seeds)
    assert vllm_engine.batch_seed(7, 3) == vllm_engine.batch_seed(7, 3)


def test_hf_named_weights_strip_wrapper_prefixes_and_skip_tied_aliases(tiny):
    _, model, _ = tiny

    class Wrapper(nn.Module):  # what DDP (module.) and torch.compile (_orig_mod.) put in front
        def __init__(self, inner):
            super().__init__()
            self.module = inner

    compiled = nn.Module()
    compiled._orig_mod = Wrapper(model)
    names = [name for name, _ in vllm_engine.hf_named_weights(compiled)]
    assert names == [name for name, _ in model.named_parameters()]
    assert model.config.tie_word_embeddings and "lm_head.weight" in model.state_dict()
    assert "lm_head.weight" not in names  # the tied alias is not sent twice


def named_tensors(sizes):
    gen = torch.Generator().manual_seed(0)
    return [(f"w{i}", torch.randn(n, generator=gen)) for i, n in enumerate(sizes)]


def test_weight_buckets_bound_bytes_cast_to_bf16_and_concatenate_to_the_model(tiny):
    _, model, _ = tiny
    params = list(vllm_engine.hf_named_weights(model))
    assert all(t.dtype == torch.float32 for _, t in params)
    bound = 64 << 10  # bytes of bf16
    buckets = list(vllm_engine.weight_buckets(params, bound, torch.bfloat16))
    assert len(buckets) > 3
    flat = [pair for bucket in buckets for pair in bucket]
    assert [name for name, _ in flat] == [name for name, _ in params]  # every tensor once, in order
    for (_, sent), (_, original) in zip(flat, params, strict=True):
        assert sent.dtype == torch.bfloat16 and sent.shape == original.shape
        assert torch.equal(sent, original.to(torch.bfloat16))
    for bucket in buckets:
        size = sum(t.numel() * 2 for _, t in bucket)
        assert size <= bound or len(bucket) == 1  # only a single oversized tensor may exceed it


def test_weight_buckets_pack_greedily_and_send_an_oversized_tensor_alone():
    sizes = [10, 20, 30, 200, 5, 5]  # elements; bf16 = 2 bytes each; bound 100 bytes = 50 elements
    buckets = list(vllm_engine.weight_buckets(named_tensors(sizes), 100, torch.bfloat16))
    assert [[name for name, _ in b] for b in buckets] == [["w0", "w1"], ["w2"], ["w3"], ["w4", "w5"]]
    with pytest.raises(ValueError):
        next(vllm_engine.weight_buckets(named_tensors([1]), 0, torch.bfloat16))


def test_weight_buckets_cast_lazily_one_bucket_at_a_time():
    pulled: list[str] = []

    def source():
        for name, tensor in named_tensors([30] * 8):
            pulled.append(name)
            yield name, tensor

    buckets = vllm_engine.weight_buckets(source(), 120, torch.bfloat16)  # two tensors per bucket
    first = next(buckets)
    assert [n for n, _ in first] == ["w0", "w1"]
    # w2 was looked at (its size decides that the bucket is full) but nothing later was read
    assert pulled == ["w0", "w1", "w2"]
    assert [n for n, _ in next(buckets)] == ["w2", "w3"] and pulled == ["w0", "w1", "w2", "w3", "w4"]


def test_weight_buckets_pass_tensors_already_in_the_dtype_through_uncopied():
    tensor = torch.ones(4, dtype=torch.bfloat16)
    ((name, sent),) = next(vllm_engine.weight_buckets([("w", tensor)], 1 << 20, torch.bfloat16))
    assert sent.data_ptr() == tensor.data_ptr()


def test_sampling_params_kwargs_carry_no_seed_and_ask_for_the_sampled_logprob():
    # the names of vllm.SamplingParams (0.32) these kwargs may use
    fields = {"n", "temperature", "top_p", "top_k", "max_tokens", "logprobs", "stop_token_ids", "detokenize"}
    kwargs = vllm_engine.sampling_params_kwargs(SamplingConfig(n=4, temperature=0.6, top_p=0.9), {7, 2})
    assert set(kwargs) <= fields and "seed" not in kwargs  # per-request seeds force vLLM's slow path
    assert kwargs["temperature"] == 0.6 and kwargs["top_p"] == 0.9 and kwargs["n"] == 4
    assert kwargs["top_k"] == -1  # 0 (off) in our config is -1 in vLLM's
    assert kwargs["stop_token_ids"] == [2, 7]  # sorted: the same params for the same stop set
    assert kwargs["logprobs"] == 0 and kwargs["detokenize"] is False  # sampled token only; we decode


def test_completions_from_outputs_groups_orders_and_decodes(tiny):
    _, _, tok = tiny
    eos = tok.eos_token_id
    hi, x = tok.encode("hi"), tok.encode("x")
    outputs = [
        SimpleNamespace(
            outputs=[sample(2, [*x, eos], "stop"), sample(0, hi, "length"), sample(1, x, "stop")]
        ),
    ]
    (group,) = vllm_engine.completions_from_outputs(outputs, [(9, 9)], tok, {eos}, n=3)
    assert [c.completion_ids for c in group] == [hi, x, [*x, eos]]  # sorted by sample index
    assert [c.truncated for c in group] == [True, False, False]
    assert [c.finish_reason for c in group] == ["length", "stop", "stop"]
    assert group[2].completion_text == "x"  # EOS kept in the ids, dropped from the text
    assert group[2].logprobs == [-0.25, -0.5] and group[0].prompt_ids == [9, 9]


def test_an_eos_on_the_last_allowed_token_is_a_stop_not_a_truncation(tiny):
    _, _, tok = tiny
    eos = tok.eos_token_id
    # vLLM says "length" when the EOS is the max_tokens-th token; the sample did stop
    outputs = [SimpleNamespace(outputs=[sample(0, [7, eos], "length")])]
    ((c,),) = vllm_engine.completions_from_outputs(outputs, [[4]], tok, {eos}, n=1)
    assert not c.truncated and c.finish_reason == "stop"


def test_completions_from_outputs_without_logprobs_and_bad_outputs(tiny):
    _, _, tok = tiny
    eos = tok.eos_token_id
    (group,) = vllm_engine.completions_from_outputs(
        [SimpleNamespace(outputs=[sample(0, [5, 6], "length", logprobs=None)])], [[4]], tok, {eos}, n=1
    )
    assert len(group[0].logprobs) == 2 and all(math.isnan(v) for v in group[0].logprobs)
    aborted = [SimpleNamespace(outputs=[sample(0, [5], "abort")])]
    with pytest.raises(RuntimeError, match="abort"):
        vllm_engine.completions_from_outputs(aborted, [[4]], tok, {eos}, n=1)
    with pytest.raises(RuntimeError, match="2 prompts"):
        vllm_engine.completions_from_outputs(aborted, [[4], [5]], tok, {eos}, n=1)


def test_stop_ids_join_the_tokenizer_and_generation_config(tiny, tmp_path):
    directory, _, tok = tiny
    assert vllm_engine._stop_ids(directory, tok) == {tok.eos_token_id}
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [tok.eos_token_id, 9]}))
    assert vllm_engine._stop_ids(tmp_path, tok) == {tok.eos_token_id, 9}


def test_constructing_without_vllm_says_what_is_missing(tiny):
    if vllm_engine.available():
        pytest.skip("vllm and CUDA are present here")
    with pytest.raises(RuntimeError, match="needs vllm and a CUDA device"):
        vllm_engine.VllmEngine(tiny[0], max_model_len=64)


# --- the call sequence on vLLM's LLM API (CPU stand-in) ------------------------------------------


class LoadedModel:
    """Stands in for vLLM's model: ``load_weights`` takes (name, tensor) pairs."""

    def __init__(self):
        self.state: dict[str, torch.Tensor] = {}
        self.calls: list[list[str]] = []

    def load_weights(self, weights):
        weights = list(weights)
        self.calls.append([name for name, _ in weights])
        self.state.update({name: t.clone() for name, t in weights})


class RecordingLLM:
    """The parts of ``vllm.LLM`` the engine uses, recording each call. ``generate`` answers every
    prompt with ``n`` samples: the token 5 then EOS, with fixed log-probs."""

    def __init__(self, eos: int, kwargs: dict):
        self.eos, self.kwargs = eos, kwargs
        self.events: list[tuple] = []
        self.model = LoadedModel()
        self.fail_generate = False

    def sleep(self, level=1):
        self.events.append(("sleep", level))

    def wake_up(self, tags=None):
        self.events.append(("wake_up", list(tags)))

    def reset_prefix_cache(self):
        self.events.append(("reset_prefix_cache",))

    def collective_rpc(self, method, timeout=None, args=(), kwargs=None):
        self.events.append(("collective_rpc", method.__name__, args))
        return [method(SimpleNamespace(), *args, **(kwargs or {}))]

    def apply_model(self, func):
        self.events.append(("apply_model",))
        return [func(self.model)]

    def generate(self, prompts, sampling_params, use_tqdm=True):
        self.events.append(("generate", [p["prompt_token_ids"] for p in prompts], sampling_params))
        if self.fail_generate:
            raise RuntimeError("CUDA error: out of memory")
        return [
            SimpleNamespace(outputs=[sample(j, [5, self.eos], "stop") for j in range(sampling_params.n)])
            for _ in prompts
        ]


@pytest.fixture
def fake_vllm(tiny, monkeypatch):
    """A stand-in ``vllm`` module (LLM, SamplingParams) and a visible "CUDA", so the real constructor
    runs; the LLM it builds is returned through ``built``."""
    built: list[RecordingLLM] = []
    eos = tiny[2].eos_token_id

    def make_llm(**kwargs):
        built.append(RecordingLLM(eos, kwargs))
        return built[-1]

    module = types.ModuleType("vllm")
    module.LLM = make_llm
    module.SamplingParams = SimpleNamespace
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    # unset for the test (set first so that the previous state, set or not, is restored after)
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "")
    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING")
    return built


@pytest.fixture
def engine(tiny, fake_vllm):
    eng = vllm_engine.VllmEngine(tiny[0], max_model_len=64, sync_bucket_bytes=32 << 10)
    return eng, fake_vllm[-1]


def test_constructor_starts_a_colocated_sleeping_engine(engine, tiny):
    eng, llm = engine
    assert isinstance(eng, RolloutEngine)
    kw = llm.kwargs
    assert kw["model"] == str(tiny[0]) and kw["skip_tokenizer_init"] is True
    assert kw["enable_sleep_mode"] is True and kw["max_model_len"] == 64
    assert kw["gpu_memory_utilization"] == vllm_engine.DEFAULT_GPU_MEMORY_UTILIZATION == 0.3
    assert kw["logprobs_mode"] == "processed_logprobs" and kw["dtype"] == "bfloat16"
    assert "distributed_executor_backend" not in kw  # one process: vLLM's own uniprocess executor
    assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"  # engine core in this process
    assert llm.events == [("sleep", 1)] and eng.asleep == {"weights", "kv_cache"}


def test_constructor_refuses_settings_it_cannot_honour(tiny, fake_vllm):
    for bad in [{"gpu_memory_utilization": 1.0}, {"tensor_parallel_size": 2}, {"sync_bucket_bytes": 0}]:
        with pytest.raises(ValueError):
            vllm_engine.VllmEngine(tiny[0], max_model_len=64, **bad)
    assert fake_vllm == []


def test_a_sync_wakes_the_weights_only_and_loads_bf16_buckets(engine, tiny):
    eng, llm = engine
    _, model, _ = tiny
    llm.events.clear()
    eng.sync_weights(model)
    assert llm.events == [("wake_up", ["weights"]), ("apply_model",)]  # verl: weights first
    assert eng.asleep == {"kv_cache"}  # the KV cache waits for the rollout
    # the engine now holds the model's weights, in bf16, sent in several bounded buckets
    expected = {name: p.detach().to(torch.bfloat16) for name, p in model.named_parameters()}
    assert llm.model.state.keys() == expected.keys()
    assert all(torch.equal(llm.model.state[k], v) for k, v in expected.items())
    assert len(llm.model.calls) > 1


def test_rollout_wakes_the_kv_cache_seeds_the_batch_once_and_sleeps_after(engine, tiny):
    eng, llm = engine
    _, model, tok = tiny
    eng.sync_weights(model)
    llm.events.clear()
    groups = eng.generate(["1+1=", "2+2="], n=3, temperature=0.8, max_new_tokens=8, seed=11)
    kinds = [e[0] for e in llm.events]
    assert kinds == ["wake_up", "reset_prefix_cache", "collective_rpc", "generate", "sleep"]
    assert llm.events[0] == ("wake_up", ["kv_cache"])
    # one seed for the whole batch, this rank's
    assert llm.events[2][1:] == ("_seed_device_generator", (vllm_engine.batch_seed(11, 0),))
    _, requests, params = llm.events[3]
    assert requests == [tok.encode("1+1="), tok.encode("2+2=")]
    assert not hasattr(params, "seed") and params.n == 3 and params.logprobs == 0
    assert eng.asleep == {"weights", "kv_cache"}
    assert [len(g) for g in groups] == [3, 3]
    assert groups[0][0].completion_ids == [5, tok.eos_token_id] and groups[0][0].logprobs == [-0.25, -0.5]

    llm.events.clear()  # no sync since: both tags in one wake-up, no prefix reset, no reseed
    eng.generate(["1+1="], n=1, max_new_tokens=8)
    assert [e[0] for e in llm.events] == ["wake_up", "generate", "sleep"]
    assert llm.events[0] == ("wake_up", ["weights", "kv_cache"])


def test_no_prompts_no_rollout(engine):
    eng, llm = engine
    llm.events.clear()
    assert eng.generate([], n=4, max_new_tokens=8, seed=1) == []
    assert llm.events == []


def test_a_failed_rollout_still_puts_the_engine_to_sleep(engine):
    eng, llm = engine
    llm.fail_generate = True
    with pytest.raises(RuntimeError, match="out of memory"):
        eng.generate(["1+1="], max_new_tokens=8, seed=1)
    assert llm.events[-1] == ("sleep", 1) and eng.asleep == {"weights", "kv_cache"}


def test_a_half_awake_engine_wakes_fully_before_it_sleeps(engine, tiny):
    eng, llm = engine
    eng.sync_weights(tiny[1])
    llm.events.clear()
    eng.sleep()
    assert llm.events == [("wake_up", ["kv_cache"]), ("sleep", 1)]
    llm.events.clear()
    eng.sleep()  # already asleep: nothing
    assert llm.events == []


def test_a_sync_needs_the_engine_core_in_this_process(tiny, fake_vllm, monkeypatch):
    # an engine core in another process cannot receive the loading closure: refuse, do not fail late
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    eng = vllm_engine.VllmEngine(tiny[0], max_model_len=64)
    with pytest.raises(RuntimeError, match="in this process"):
        eng.sync_weights(tiny[1])
    assert fake_vllm[-1].model.calls == []


def test_a_prompt_that_would_overflow_max_model_len_is_refused_before_waking(engine):
    eng, llm = engine
    llm.events.clear()
    with pytest.raises(ValueError, match="max_model_len=64"):
        eng.generate([[3] * 60], max_new_tokens=8)
    assert llm.events == []


# --- the real engine (GPU) -----------------------------------------------------------------------


def torch_logprobs(model, prompt_ids, completion_ids) -> list[float]:
    """log softmax(logits) of each completion token under ``model`` (temperature 1, no filters)."""
    ids = torch.tensor([prompt_ids + completion_ids], device=next(model.parameters()).device)
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1 : -1].float()
    lps = torch.log_softmax(logits, dim=-1).gather(-1, ids[0, len(prompt_ids) :, None]).squeeze(-1)
    return lps.tolist()


def max_gap(engine_groups, model) -> float:
    return max(
        abs(a - b)
        for group in engine_groups
        for c in group
        for a, b in zip(c.logprobs, torch_logprobs(model, c.prompt_ids, c.completion_ids), strict=True)
    )


@pytest.mark.gpu
@pytest.mark.timeout(900)
def test_vllm_engine_samples_like_the_torch_model_and_follows_a_weight_sync(tiny):
    if not vllm_engine.available():
        pytest.skip("needs a CUDA device and vllm installed (vllm_engine.available() is False)")
    directory, model, _ = tiny
    model.to("cuda")
    engine = vllm_engine.VllmEngine(
        directory, dtype="float32", gpu_memory_utilization=0.2, enforce_eager=True, max_model_len=256
    )
    prompts = ["1+1=", "12+30=", "What is 7*6?"]
    kw = {"n": 2, "temperature": 1.0, "max_new_tokens": 16, "seed": 0}
    before = engine.generate(prompts, **kw)
    assert [len(g) for g in before] == [2, 2, 2]
    assert engine.asleep == {"weights", "kv_cache"}
    # float32 on both sides; kernels differ, so agreement is to float rounding, not bit-exact
    assert max_gap(before, model) < 2e-3
    again = engine.generate(prompts, **kw)  # the same batch with the same seed
    assert [c.completion_ids for g in again for c in g] == [c.completion_ids for g in before for c in g]

    with torch.no_grad():  # a different policy: every weight moved
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    engine.sync_weights(model)
    after = engine.generate(prompts, **kw)
    assert [c.completion_ids for g in after for c in g] != [c.completion_ids for g in before for c in g]
    assert max_gap(after, model) < 2e-3  # the log-probs are the changed model's
