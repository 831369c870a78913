"""The vLLM rollout engine: its pure helpers on the CPU (plain objects shaped like vLLM 0.32's
RequestOutput / CompletionOutput / Logprob), and on a CUDA host with vllm installed the real engine on
a saved tiny model: its log-probs agree with the torch model's, and a weight sync from a changed torch
model changes what it samples and the log-probs it reports. Without CUDA or vllm that one test is
skipped with the reason (vLLM links libtorch_cuda: it cannot run beside the CPU torch; packaging.md)."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from trainers.common import vllm_engine
from trainers.common.models import load_policy
from trainers.common.rollout import SamplingConfig
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


def test_sampling_params_kwargs_are_vllm_sampling_params_fields():
    # the names of vllm.SamplingParams (0.32) these kwargs may use
    fields = {
        "n",
        "temperature",
        "top_p",
        "top_k",
        "max_tokens",
        "logprobs",
        "seed",
        "stop_token_ids",
        "detokenize",
    }
    greedy = vllm_engine.sampling_params_kwargs(SamplingConfig(temperature=0.0, top_p=0.9), 3, {7, 2})
    assert set(greedy) <= fields
    assert greedy["temperature"] == 0.0 and greedy["top_p"] == 0.9 and greedy["seed"] == 3
    assert greedy["stop_token_ids"] == [2, 7]  # sorted: the same params for the same stop set
    assert greedy["logprobs"] == 0 and greedy["detokenize"] is False  # sampled token only; we decode


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
    assert [c.completion_ids for c in group] == [hi, x, [*x, eos]]
    assert [c.truncated for c in group] == [True, False, False]
    assert group[2].completion_text == "x"  # EOS kept in the ids, dropped from the text
    assert group[2].logprobs == [-0.25, -0.5] and group[0].prompt_ids == [9, 9]


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


def test_hf_weights_strip_wrapper_prefixes(tiny):
    _, model, _ = tiny

    class Wrapper(nn.Module):  # what DDP (module.) and torch.compile (_orig_mod.) put in front
        def __init__(self, inner):
            super().__init__()
            self.module = inner

    compiled = nn.Module()
    compiled._orig_mod = Wrapper(model)
    names = [name for name, _ in vllm_engine._hf_weights(compiled)]
    assert names == list(model.state_dict())


def test_stop_ids_join_the_tokenizer_and_generation_config(tiny, tmp_path):
    directory, _, tok = tiny
    assert vllm_engine._stop_ids(directory, tok) == {tok.eos_token_id}
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [tok.eos_token_id, 9]}))
    assert vllm_engine._stop_ids(tmp_path, tok) == {tok.eos_token_id, 9}


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
    # float32 on both sides; kernels differ, so agreement is to float rounding, not bit-exact
    assert max_gap(before, model) < 2e-3
    assert engine.generate(prompts, **kw)[0][0].completion_ids == before[0][0].completion_ids  # seeded

    with torch.no_grad():  # a different policy: every weight moved
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    engine.sync_weights(model)
    after = engine.generate(prompts, **kw)
    assert [c.completion_ids for g in after for c in g] != [c.completion_ids for g in before for c in g]
    assert max_gap(after, model) < 2e-3  # the log-probs are the changed model's
