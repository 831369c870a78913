"""TorchSampler against the no-cache reference and a full-forward recomputation (the vLLM engine has its
own tests: test_vllm_engine.py). No database, CPU only."""

from __future__ import annotations

import math

import pytest
import torch

from trainers.common.models import load_policy
from trainers.common.rollout import (
    ChatTemplateEngine,
    Completion,
    RolloutEngine,
    SamplingConfig,
    TorchSampler,
    mix64,
    row_noise,
    sample_key,
    sample_without_cache,
    sampling_logprobs,
)
from trainers.common.tiny import build_tiny_model

# Different lengths (1 to 39 characters), so a batch needs left padding.
PROMPTS = ["7", "1+1=", "What is 12 * 7? Answer in \\boxed{}.", "(3 - 1) / 2 = ?\n", "ab cd"]


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """One intra-op thread: these models are tiny, and on a shared 2-core machine a second OpenMP
    thread mostly spin-waits (the suite ran 5x slower under load with 2). Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    model, tok = load_policy(build_tiny_model(tmp_path_factory.mktemp("tiny"), seed=0))
    return model, tok


def ids_of(groups: list[list[Completion]]) -> list[list[list[int]]]:
    return [[c.completion_ids for c in group] for group in groups]


def full_forward_logits(model, completion: Completion) -> torch.Tensor:
    """Logits predicting every completion token, from one unpadded forward over prompt + completion."""
    ids = torch.tensor([completion.prompt_ids + completion.completion_ids])
    with torch.no_grad():
        logits = model(ids).logits[0].float()
    start = len(completion.prompt_ids) - 1
    return logits[start : start + len(completion.completion_ids)]


def test_greedy_kv_cache_equals_no_cache_reference_with_left_padding(tiny):
    model, tok = tiny
    sampler = TorchSampler(model, tok, batch_size=8)
    cached = sampler.generate(PROMPTS, n=2, temperature=0, max_new_tokens=24)
    batched_ref = sample_without_cache(
        model, tok, PROMPTS, n=2, temperature=0, max_new_tokens=24, batch_size=8
    )
    # Reference without any padding: one prompt at a time.
    alone = [
        sample_without_cache(model, tok, [p], n=1, temperature=0, max_new_tokens=24)[0][0] for p in PROMPTS
    ]
    assert ids_of(cached) == ids_of(batched_ref)
    for group, single in zip(cached, alone, strict=True):
        assert [c.completion_ids for c in group] == [single.completion_ids] * 2
        assert max(abs(a - b) for a, b in zip(group[0].logprobs, single.logprobs, strict=True)) < 1e-4
    # Not vacuous: greedy outputs vary along the sequence and between prompts.
    assert any(len(set(c.completion_ids)) > 3 for group in cached for c in group)
    assert len({tuple(group[0].completion_ids) for group in cached}) == len(PROMPTS)


def test_sampling_is_reproducible_under_a_seed_and_matches_the_reference(tiny):
    model, tok = tiny
    sampler = TorchSampler(model, tok, batch_size=8)
    kwargs = dict(n=3, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=20)
    a = sampler.generate(PROMPTS, seed=11, **kwargs)
    b = sampler.generate(PROMPTS, seed=11, **kwargs)
    c = sampler.generate(PROMPTS, seed=12, **kwargs)
    assert ids_of(a) == ids_of(b)
    assert [[x.logprobs for x in g] for g in a] == [[x.logprobs for x in g] for g in b]
    assert ids_of(a) != ids_of(c)
    ref = sample_without_cache(model, tok, PROMPTS, seed=11, batch_size=8, **kwargs)
    assert ids_of(a) == ids_of(ref)


@pytest.mark.parametrize("temperature", [1.0, 0.6, 1.7])
def test_logprobs_equal_log_softmax_of_recomputed_logits_over_temperature(tiny, temperature):
    model, tok = tiny
    groups = TorchSampler(model, tok, batch_size=6).generate(
        PROMPTS, n=2, temperature=temperature, max_new_tokens=30, seed=3
    )
    worst = 0.0
    for completion in (c for g in groups for c in g):
        assert len(completion.logprobs) == len(completion.completion_ids) > 0
        expected = torch.log_softmax(full_forward_logits(model, completion) / temperature, dim=-1)
        expected = expected.gather(-1, torch.tensor(completion.completion_ids)[:, None]).squeeze(-1)
        worst = max(worst, (expected - torch.tensor(completion.logprobs)).abs().max().item())
    assert worst < 1e-4


def test_greedy_logprobs_are_those_of_temperature_one(tiny):
    model, tok = tiny
    (completion,) = TorchSampler(model, tok).generate(["2+2="], n=1, temperature=0, max_new_tokens=10)[0]
    logits = full_forward_logits(model, completion)
    assert completion.completion_ids == logits.argmax(-1).tolist()
    expected = torch.log_softmax(logits, -1).max(-1).values
    assert torch.allclose(torch.tensor(completion.logprobs), expected, atol=1e-4)


def reference_filtered_logprobs(scaled: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """An independent top-k / top-p (written differently from the sampler's): keep the k largest
    logits, then, in descending order, every token whose probability mass strictly above it is
    < top_p (the smallest prefix reaching top_p); renormalise."""
    keep = torch.ones_like(scaled, dtype=torch.bool)
    if top_k > 0:
        kth = scaled.sort(-1, descending=True).values[:, top_k - 1 : top_k]
        keep &= scaled >= kth
    masked = scaled.masked_fill(~keep, -math.inf)
    if top_p < 1:
        probs, order = masked.softmax(-1).sort(-1, descending=True)
        mass_above = probs.cumsum(-1) - probs
        keep_sorted = mass_above < top_p
        keep = torch.zeros_like(keep).scatter(-1, order, keep_sorted) & keep
        masked = scaled.masked_fill(~keep, -math.inf)
    return torch.log_softmax(masked, -1)


def test_top_k_and_top_p_restrict_and_renormalise_the_sampling_distribution(tiny):
    model, tok = tiny
    sampler = TorchSampler(model, tok)
    greedy = sampler.generate(PROMPTS, n=1, temperature=0, max_new_tokens=12)
    top1 = sampler.generate(PROMPTS, n=2, temperature=1.3, top_k=1, max_new_tokens=12, seed=0)
    assert [[c.completion_ids] * 2 for c in (g[0] for g in greedy)] == ids_of(top1)
    assert all(lp == 0.0 for g in top1 for c in g for lp in c.logprobs)  # one token left: prob 1

    for top_k, top_p in ((5, 1.0), (0, 0.3), (0, 0.8), (8, 0.5)):
        groups = sampler.generate(
            PROMPTS, n=2, temperature=0.9, top_k=top_k, top_p=top_p, max_new_tokens=15, seed=1
        )
        for completion in (c for g in groups for c in g):
            scaled = full_forward_logits(model, completion) / 0.9
            expected = reference_filtered_logprobs(scaled, top_k, top_p)
            kept = torch.isfinite(expected)
            assert (kept.sum(-1) < scaled.shape[-1]).all()  # the filter did drop tokens
            if top_k:
                assert (kept.sum(-1) <= top_k).all()
            tokens = torch.tensor(completion.completion_ids)
            assert kept.gather(-1, tokens[:, None]).all()  # every sampled token survived the filter
            want = expected.gather(-1, tokens[:, None]).squeeze(-1)
            assert torch.allclose(torch.tensor(completion.logprobs), want, atol=1e-4)
            # The sampler's own filter agrees with the reference on the kept set, not just the sample.
            ours = sampling_logprobs(scaled * 0.9, SamplingConfig(temperature=0.9, top_k=top_k, top_p=top_p))
            assert torch.equal(torch.isfinite(ours), kept)
            # Renormalised: above the unfiltered log-prob.
            full = torch.log_softmax(scaled, -1).gather(-1, tokens[:, None]).squeeze(-1)
            assert (want > full + 1e-6).all()


def test_truncated_exactly_when_max_new_tokens_is_hit_without_eos(tiny):
    model, tok = tiny
    eos = tok.eos_token_id
    sampler = TorchSampler(model, tok, batch_size=16)
    groups = sampler.generate(PROMPTS, n=6, temperature=1.0, max_new_tokens=40, seed=5)
    completions = [c for g in groups for c in g]
    for c in completions:
        assert eos not in c.completion_ids[:-1]  # generation stops at the first EOS
        hit_limit = len(c.completion_ids) == 40
        ended_with_eos = c.completion_ids[-1] == eos
        assert c.truncated == (hit_limit and not ended_with_eos)
        assert c.finish_reason == ("length" if c.truncated else "stop")
        assert ended_with_eos or hit_limit
        # The text drops special tokens (a random model may sample <bos> or <pad> too).
        visible = [t for t in c.completion_ids if t not in tok.all_special_ids]
        assert c.completion_text == tok.decode(visible) and len(c.completion_text) == len(visible)
    assert any(c.truncated for c in completions) and any(not c.truncated for c in completions)

    # EOS exactly at the last allowed token is a stop, not a truncation. The same seed replays the
    # same prefixes with a smaller max_new_tokens (noise is drawn per step for every row).
    k = next(len(c.completion_ids) for c in completions if not c.truncated and len(c.completion_ids) > 2)
    short = sampler.generate(PROMPTS, n=6, temperature=1.0, max_new_tokens=k, seed=5)
    for long_c, short_c in zip(completions, (c for g in short for c in g), strict=True):
        assert short_c.completion_ids == long_c.completion_ids[:k]
        if len(long_c.completion_ids) == k and not long_c.truncated:
            assert not short_c.truncated and short_c.finish_reason == "stop"
        elif len(long_c.completion_ids) > k:
            assert short_c.truncated and short_c.finish_reason == "length"
    assert any(len(c.completion_ids) == k and not c.truncated for g in short for c in g)


def test_n_samples_are_grouped_per_prompt_across_chunks(tiny):
    model, tok = tiny
    # batch_size 3 with n=4: groups straddle chunk boundaries.
    groups = TorchSampler(model, tok, batch_size=3).generate(
        PROMPTS, n=4, temperature=1.0, max_new_tokens=8, seed=0
    )
    assert len(groups) == len(PROMPTS) and all(len(g) == 4 for g in groups)
    for prompt, group in zip(PROMPTS, groups, strict=True):
        assert all(c.prompt_ids == tok.encode(prompt) for c in group)
        assert len({tuple(c.completion_ids) for c in group}) > 1  # independent samples
    as_ids = TorchSampler(model, tok, batch_size=3).generate(
        [tok.encode(p) for p in PROMPTS], n=4, temperature=1.0, max_new_tokens=8, seed=0
    )
    assert ids_of(as_ids) == ids_of(groups)  # token-id prompts are used as given


def test_finished_rows_leave_the_batch_and_an_all_finished_batch_stops(tiny):
    model, tok = tiny
    batch_sizes: list[int] = []
    hook = model.register_forward_pre_hook(
        lambda m, args, kwargs: batch_sizes.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    try:
        everything = range(model.config.vocab_size)  # every token stops: one token per row
        groups = TorchSampler(model, tok, batch_size=8, stop_token_ids=everything).generate(
            PROMPTS, n=1, temperature=1.0, max_new_tokens=50, seed=0
        )
        assert batch_sizes == [len(PROMPTS)]  # the prefill only: no decode step for a finished batch
        assert all(len(g[0].completion_ids) == 1 and not g[0].truncated for g in groups)

        batch_sizes.clear()
        groups = TorchSampler(model, tok, batch_size=32).generate(
            PROMPTS, n=6, temperature=1.0, max_new_tokens=40, seed=5
        )
    finally:
        hook.remove()
    lengths = [len(c.completion_ids) for g in groups for c in g]
    alive_before_step = [sum(n > step for n in lengths) for step in range(max(lengths))]
    assert batch_sizes == alive_before_step  # step t runs exactly the rows that still need a token
    assert batch_sizes[-1] < batch_sizes[0]


def test_sync_weights_points_at_the_new_model_and_training_mode_is_restored(tiny, tmp_path):
    model, tok = tiny
    other, _ = load_policy(build_tiny_model(tmp_path / "other", seed=1))
    sampler = TorchSampler(model, tok)
    assert isinstance(sampler, RolloutEngine)
    before = sampler.generate(PROMPTS, n=1, temperature=0, max_new_tokens=10)
    other.train()
    sampler.sync_weights(other)
    after = sampler.generate(PROMPTS, n=1, temperature=0, max_new_tokens=10)
    assert other.training  # the caller's mode is restored
    assert ids_of(after) == ids_of(
        sample_without_cache(other, tok, PROMPTS, n=1, temperature=0, max_new_tokens=10)
    )
    assert ids_of(after) != ids_of(before)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(n=0),
        dict(temperature=-0.1),
        dict(top_p=0.0),
        dict(top_p=1.5),
        dict(max_new_tokens=0),
        dict(temperature=math.nan),
    ],
)
def test_invalid_sampling_arguments_are_rejected(tiny, kwargs):
    model, tok = tiny
    with pytest.raises(ValueError):
        TorchSampler(model, tok).generate(["1"], **kwargs)


def test_empty_prompt_is_rejected(tiny):
    model, tok = tiny
    with pytest.raises(ValueError, match="empty"):
        TorchSampler(model, tok).generate(["1", ""], n=1, max_new_tokens=2)


def test_row_noise_is_the_counter_hash_of_its_key_and_position():
    """The int64 tensor hash equals a plain-integer splitmix64 (wrapping products, logical shifts), and
    the noise of (key, position, token) is -log of its top 53 bits."""
    keys = [sample_key(7, 3, 0), sample_key(7, 3, 1), sample_key(2**40 + 5, 123456, 15)]
    signed = [k - 2**64 if k >= 2**63 else k for k in keys]
    noise = row_noise(torch.tensor(signed, dtype=torch.int64), 4, 50).double()
    gamma = 0x9E3779B97F4A7C15
    for r, key in enumerate(keys):
        base = mix64(key + 5 * gamma)
        for v in (0, 1, 17, 49):
            bits = mix64(base + (v + 1) * gamma) >> 11
            expected = -math.log((bits + 0.5) * 2.0**-53)
            assert noise[r, v].item() == pytest.approx(expected, rel=1e-6)
    assert noise.min() > 0 and len({sample_key(1, k, j) for k in range(50) for j in range(16)}) == 800


def test_a_sample_does_not_depend_on_batch_size_or_the_other_prompts(tiny):
    """Noise is per (seed, prompt key, sample, position): the same prompt key and sample index give the
    same completion in any chunking and with any other prompts beside it (what several ranks rely on)."""
    model, tok = tiny
    kwargs = dict(n=3, temperature=1.0, max_new_tokens=16, seed=21)
    everything = TorchSampler(model, tok, batch_size=32).generate(PROMPTS, **kwargs)
    chunked = TorchSampler(model, tok, batch_size=2).generate(PROMPTS, **kwargs)
    assert ids_of(chunked) == ids_of(everything)
    # prompts 3 and 1 alone, keyed as in the full call, in another order and chunking
    subset = TorchSampler(model, tok, batch_size=4).generate(
        [PROMPTS[3], PROMPTS[1]], prompt_keys=[3, 1], **kwargs
    )
    assert ids_of(subset) == [ids_of(everything)[3], ids_of(everything)[1]]
    # the uncached reference agrees, and another key draws other samples
    ref = sample_without_cache(model, tok, [PROMPTS[1]], prompt_keys=[1], batch_size=1, **kwargs)
    assert ids_of(ref) == [ids_of(everything)[1]]
    other = TorchSampler(model, tok).generate([PROMPTS[1]], prompt_keys=[99], **kwargs)
    assert ids_of(other) != [ids_of(everything)[1]]
    with pytest.raises(ValueError, match="prompt_keys"):
        TorchSampler(model, tok).generate(PROMPTS, prompt_keys=[1, 2], **kwargs)


def test_bf16_sampling_under_autocast_on_the_cpu(tiny):
    """compute_dtype=bfloat16 with fp32 weights: sampled under autocast (the model's weights stay fp32),
    completions well-formed, log-probs close to the fp32 ones of the same tokens."""
    model, tok = tiny
    sampler = TorchSampler(model, tok, batch_size=8, compute_dtype=torch.bfloat16)
    groups = sampler.generate(PROMPTS, n=2, temperature=1.0, max_new_tokens=12, seed=4)
    assert next(model.parameters()).dtype == torch.float32
    worst = 0.0
    for c in (c for g in groups for c in g):
        assert len(c.logprobs) == len(c.completion_ids) > 0 and all(math.isfinite(x) for x in c.logprobs)
        want = torch.log_softmax(full_forward_logits(model, c), -1)
        want = want.gather(-1, torch.tensor(c.completion_ids)[:, None]).squeeze(-1)
        worst = max(worst, (want - torch.tensor(c.logprobs)).abs().max().item())
    assert 0 < worst < 0.1  # bf16 rounding, not another distribution


def test_chat_template_engine_renders_text_and_passes_token_ids(tiny):
    model, tok = tiny
    engine = ChatTemplateEngine(TorchSampler(model, tok), tok, "auto")
    ids = tok.encode("ab")
    (text_group,), (ids_group,) = (
        engine.generate([p], n=1, temperature=0, max_new_tokens=4) for p in ("1+1=", ids)
    )
    rendered = tok.encode(tok.apply_chat_template([{"role": "user", "content": "1+1="}], tokenize=False,
                                                  add_generation_prompt=True), add_special_tokens=False)  # fmt: skip
    assert text_group[0].prompt_ids == rendered and rendered[0] == tok.bos_token_id
    assert ids_group[0].prompt_ids == ids
