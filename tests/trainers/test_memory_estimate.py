"""The per-GPU memory estimate: each component against numbers worked out by hand for a small model,
what autograd really saves, monotonicity in every knob, and reading a trainer config (the presets
against their hardware: test_memory_estimate_presets.py).
"""

from __future__ import annotations

import pytest

from trainers.common import memory_estimate as me
from trainers.common.memory_estimate import (
    REFERENCE_SHAPES,
    TINY_MODEL_INFO,
    ModelShape,
    estimate,
    estimate_for_config,
)

# h=64, 2 layers, 4 heads of 16 (q width 64), 2 KV heads (KV width 32), intermediate 128, vocab 100, tied.
SMALL = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
    "vocab_size": 100,
    "tie_word_embeddings": True,
}
# attention: q 64*64+64, k and v 2*(64*32+32), o 64*64 = 12416; MLP 3*64*128 = 24576; norms 128
# -> 37120 per layer, x2 = 74240; embeddings 100*64 = 6400; final norm 64.
P = 80_704


def small(**kw):
    args = dict(kind="sft", micro_batch_tokens=1024, gradient_checkpointing=False, dtype="bfloat16")
    return estimate(SMALL, **{**args, **kw})


def test_parameter_count_of_the_small_shape_and_of_the_reference_shapes():
    assert ModelShape.from_info(SMALL).parameters == P
    for name, info in REFERENCE_SHAPES.items():
        counted = ModelShape.from_info({**info, "parameters": None}).parameters
        assert counted == pytest.approx(info["parameters"], rel=1e-3), name


def test_model_states_torch_engine():
    c = small().components
    # fp32 parameters, gradients, two fp32 moments; bf16 autocast copies of the weights
    assert (c["parameters"], c["gradients"], c["optimizer"], c["autocast_copies"]) == (
        4 * P,
        4 * P,
        8 * P,
        2 * P,
    )
    assert c["optimizer_step"] == 4 * P  # foreach AdamW's sqrt(v) for every parameter
    c32 = small(dtype="float32").components
    assert c32["autocast_copies"] == 0 and c32["parameters"] == 4 * P
    # the torch engine shards nothing, whatever zero_stage says
    assert small(zero_stage=3, world_size=4).components["parameters"] == 4 * P


@pytest.mark.parametrize(
    ("stage", "params", "grads", "optimizer", "step"),
    [
        (0, 2 * P, 2 * P, 12 * P, 8 * P),
        (1, 2 * P, 2 * P, 12 * P // 4, 8 * P // 4),
        (2, 2 * P, 2 * P // 4, 12 * P // 4, 8 * P // 4),
        (3, 2 * P // 4, 2 * P // 4, 12 * P // 4, 8 * P // 4),
    ],
)
def test_model_states_deepspeed_bf16_per_zero_stage(stage, params, grads, optimizer, step):
    c = small(engine="deepspeed", zero_stage=stage, world_size=4).components
    assert c["optimizer_step"] == step  # the fp32 gradient partition and sqrt(v) over it
    assert (c["parameters"], c["gradients"], c["optimizer"], c["autocast_copies"]) == (
        params,
        grads,
        optimizer,
        0,
    )


def test_deepspeed_buffers():
    assert small(engine="deepspeed", zero_stage=0).components["engine_buffers"] == 0
    # stage 1-2: the reduce bucket, capped by the model's size (bf16)
    assert small(engine="deepspeed", zero_stage=2).components["engine_buffers"] == 2 * P
    # stage 3: + the larger of the embedding (6400) and two layers (2 * 37152; the final norm counts
    # with the layers here) gathered
    per_layer = (P - 6400) // 2
    assert small(engine="deepspeed", zero_stage=3).components["engine_buffers"] == 2 * P + 2 * (2 * per_layer)


def test_activations_by_hand():
    # per layer and token (e=2, r=4: the torch engine under autocast): e(3h + 4q + 2h + 4f) for the
    # projections' bf16 input casts, SDPA's q, k, v and output, the SwiGLU = 2*(192+256+128+512) = 2176;
    # two norms 2h(4+r) = 1024; log-sum-exp 4 x heads = 16 -> 3216. Final norm h(4+r) + head input h*r
    # = 768; the bf16 padding mask min(seq, tokens) x e = 512.
    tokens, seq = 1024, 256
    plain = small(sequence_tokens=seq).components["activations"]
    assert plain == tokens * (2 * 3216 + 768 + 512)
    # checkpointing: each layer's input (L*h*r = 512) + one layer recomputed + its input gradients (2*h*r)
    ckpt = small(sequence_tokens=seq, gradient_checkpointing=True).components["activations"]
    assert ckpt == tokens * (512 + 3216 + 512 + 768 + 512)
    # DeepSpeed bf16: one shared input per block, a bf16 residual stream: 2*(64+256+64+512) + 2*64*6 + 16
    ds = small(sequence_tokens=seq, engine="deepspeed").components["activations"]
    assert ds == tokens * (2 * 2576 + (64 * 6 + 64 * 2) + 512)


@pytest.mark.parametrize(
    ("mode", "engine"), [("bfloat16", "torch"), ("bfloat16", "deepspeed"), ("float32", "torch")]
)
def test_activations_match_what_autograd_saves(mode, engine):
    """The per-layer count against a saved-tensor hook on a real transformers Qwen2 forward (CPU, SDPA,
    a left-padded row): every tensor autograd keeps, parameters and their autocast casts excluded."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    info = {**SMALL, "intermediate_size": 176, "vocab_size": 50}
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**info, use_sliding_window=False, attn_implementation="sdpa"))
    autocast = mode == "bfloat16" and engine == "torch"
    model = model.to(
        torch.bfloat16 if mode == "bfloat16" and engine == "deepspeed" else torch.float32
    ).train()
    rows, length = 3, 40
    ids = torch.randint(0, 50, (rows, length))
    mask = torch.ones_like(ids)
    mask[0, :7] = 0
    weights = {tuple(p.shape) for p in model.parameters()} | {
        tuple(p.shape)[::-1] for p in model.parameters()
    }
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params and tuple(t.shape) not in weights:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
    with hooks, torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
    e = estimate(info, kind="sft", micro_batch_tokens=rows * length, gradient_checkpointing=False, dtype=mode,
                 engine=engine, sequence_tokens=length)  # fmt: skip
    # the estimate also counts the hidden states the LM head reads, which this forward stops before; not
    # counted: the token ids, RoPE's cos/sin, the norms' rsqrt (~1% at this width, nothing at 7B)
    head_input = rows * length * hidden.shape[-1] * (4 if engine == "torch" else 2)
    assert e.components["activations"] - head_input == pytest.approx(sum(saved.values()), rel=0.03)


def test_a_sequence_longer_than_the_budget_gets_its_own_micro_batch():
    e = small(micro_batch_tokens=512, sequence_tokens=2000)
    assert e.assumptions["tokens_per_micro_batch"] == 2000
    assert any("own" in note for note in e.notes)


def test_logits_are_chunked():
    # 1024 tokens x 100 vocab x 4 bytes, four copies; the chunk backward's fp32 LM-head weight gradient
    # and bf16 weight cast (100 x 64 x (4 + 2))
    assert small().components["logits"] == 4 * 1024 * 100 * 4 + 6400 * 6
    assert small(engine="deepspeed").components["logits"] == 4 * 1024 * 100 * 4 + 6400 * 2
    # a big vocabulary is capped at one chunk of CHUNK_LOGIT_BYTES per copy
    big = estimate(
        {**SMALL, "vocab_size": 152064}, kind="rl", micro_batch_tokens=16384, gradient_checkpointing=True
    )
    assert big.components["logits"] == 4 * me.CHUNK_LOGIT_BYTES + 152064 * 64 * 6
    assert small(kind="reward").components["logits"] == 0


def test_mirrored_constants_match_the_trainers():
    from trainers.common import engines, token_batching

    assert me.CHUNK_LOGIT_BYTES == token_batching.CHUNK_LOGIT_BYTES
    assert me.TORCH_SAMPLER_ROWS == engines.SAMPLER_BATCH


def test_rollout_shares():
    rows, prompt, tokens = 8, 32, 96
    torch_rl = small(
        kind="rl",
        rollout_engine="torch",
        rollout_rows=rows,
        rollout_prompt_tokens=prompt,
        rollout_tokens=tokens,
    )
    # KV: 2 x L x kv width x 2 bytes = 256 per row-token; prefill: 3f*e + 4h = 1024 per prompt token;
    # sampling: vocab x 4 bytes x 4 copies = 1600 per row
    assert torch_rl.components["rollout"] == 256 * rows * tokens + 1024 * rows * prompt + 1600 * rows
    vllm = small(kind="rl", rollout_engine="vllm", gpu_memory_utilization=0.4, gpu_total_bytes=10 * 2**30)
    assert vllm.components["rollout"] == int(0.4 * 10 * 2**30)
    unknown = small(kind="rl", rollout_engine="vllm")
    assert any("GPU size unknown" in n for n in unknown.notes)
    # SFT and reward runs generate nothing here
    assert small(rollout_engine="torch", rollout_rows=8, rollout_tokens=96).components["rollout"] == 0


def test_phases_and_total():
    e = small(kind="rl", rollout_engine="vllm", gpu_memory_utilization=0.5, gpu_total_bytes=2**30)
    c = e.components
    # the torch engine frees gradients before generating; vLLM sleeps during the update
    assert e.phase_bytes("rollout") == c["parameters"] + c["autocast_copies"] + c["optimizer"] + c["rollout"]
    assert "rollout" not in e.phases["update"] and "activations" not in e.phases["rollout"]
    assert e.phase_bytes("step") == sum(
        c[k] for k in ("parameters", "gradients", "optimizer", "optimizer_step")
    )
    assert e.total == max(e.phase_bytes(p) for p in ("update", "step", "rollout")) == e.phase_bytes("rollout")
    assert e.peak_phase == "rollout"
    d = e.to_dict()
    assert d["total_bytes"] == e.total and d["phases"]["update"] == e.phase_bytes("update")
    assert e.fits(e.total + me.RESERVE_BYTES) and not e.fits(e.total + me.RESERVE_BYTES - 1)
    assert "per GPU at the rollout" in e.describe()


def test_reference_and_critic():
    assert small(kind="rl").components["reference"] == 0
    assert small(kind="rl", kl_coef=0.1).components["reference"] == 2 * P  # bf16, frozen
    assert small(kind="dapo").components["critic"] == 4 * P  # a float32 copy beside the torch engine
    assert small(kind="dapo", engine="deepspeed").components["critic"] == 2 * P


def test_monotonic():
    def total(**kw):
        return small(kind="rl", rollout_engine="torch", rollout_rows=8, rollout_tokens=64, **kw).total

    assert total(micro_batch_tokens=4096) > total(micro_batch_tokens=1024)
    layers = estimate(
        {**SMALL, "num_hidden_layers": 4}, kind="sft", micro_batch_tokens=1024, gradient_checkpointing=False
    )
    assert (
        layers.total
        > estimate(SMALL, kind="sft", micro_batch_tokens=1024, gradient_checkpointing=False).total
    )
    assert total(gradient_checkpointing=True) < total(gradient_checkpointing=False)
    # sharding over 16 layers (with 2 layers ZeRO-3's two gathered layers are the whole model)
    deep = {**SMALL, "num_hidden_layers": 16}

    def sharded(stage, ranks):
        args = dict(kind="rl", micro_batch_tokens=1024, gradient_checkpointing=True, engine="deepspeed")
        return estimate(deep, zero_stage=stage, world_size=ranks, **args).total

    assert sharded(0, 4) > sharded(1, 4) > sharded(2, 4) > sharded(3, 4)
    assert sharded(3, 1) > sharded(3, 2) > sharded(3, 8)
    assert (
        small(dtype="float32").components["activations"] > small(dtype="bfloat16").components["activations"]
    )


def test_bad_inputs_name_the_field():
    with pytest.raises(ValueError, match="hidden_size"):
        estimate({**SMALL, "hidden_size": 0}, kind="sft", micro_batch_tokens=16, gradient_checkpointing=False)
    with pytest.raises(ValueError, match="kind"):
        small(kind="tabular")
    with pytest.raises(ValueError, match="zero_stage"):
        small(engine="deepspeed", zero_stage=4)


def test_tiny_model_info_matches_the_built_tiny_model():
    import torch
    from transformers import Qwen2ForCausalLM

    from trainers.common.tiny import build_char_tokenizer, tiny_config

    config = tiny_config(len(build_char_tokenizer()))
    with torch.device("meta"):
        model = Qwen2ForCausalLM(config)
    for key, value in TINY_MODEL_INFO.items():
        if key == "parameters":
            assert sum(p.numel() for p in model.parameters()) == value
        elif key == "architecture":
            assert type(model).__name__ == value
        else:
            assert getattr(config, key) == value, key


def test_estimate_for_config_reads_a_validated_config():
    from trainers.base import get_spec

    config = get_spec("rl").validate({"model_path": "tiny"}).model_dump(mode="json")
    e = estimate_for_config("rl", config, TINY_MODEL_INFO)
    stages = config["rollout"]["stages"]
    longest = config["rollout"]["max_prompt"] + max(s["max_response"] for s in stages)
    assert e.assumptions["tokens_per_micro_batch"] == max(config.get("micro_batch_tokens", 16384), longest)
    assert e.assumptions["world_size"] == 1
    assert estimate_for_config("tabular", config, TINY_MODEL_INFO) is None
    assert estimate_for_config("rl", config, None) is None
    # processes: nproc_per_node x nodes; "auto" is the worker's GPUs
    ds = {**config, "engine": "deepspeed", "zero_stage": 3, "nproc_per_node": "auto", "nodes": 2}
    assert estimate_for_config("rl", ds, TINY_MODEL_INFO, gpus_per_node=4).assumptions["world_size"] == 8
    # the rollout engine: auto resolves by what the worker has
    vllm = estimate_for_config("rl", config, TINY_MODEL_INFO, 80 * 2**30, vllm_available=True)
    assert vllm.assumptions["rollout_engine"] == "vllm"
    assert vllm.components["rollout"] == int(
        config["rollout"].get("gpu_memory_utilization", 0.5) * 80 * 2**30
    )


def test_estimate_for_reward_and_dapo_configs():
    from trainers.base import get_spec

    for kind in ("reward", "dapo", "sft"):
        raw = {"model_path": "tiny", **({"train_dataset": "pairs.jsonl"} if kind == "reward" else {})}
        config = get_spec(kind).validate(raw).model_dump(mode="json")
        e = estimate_for_config(kind, config, TINY_MODEL_INFO)
        assert e.total > 0
    reward = estimate_for_config("reward", {"max_length": 100, "bf16": True}, TINY_MODEL_INFO)
    assert reward.assumptions["dtype"] == "bfloat16" and reward.assumptions["tokens_per_micro_batch"] >= 200
    # a micro-batch never holds more than the batch: 4 pairs of 2 x 100 tokens, 3 SFT rows of 50
    few = estimate_for_config("reward", {"max_length": 100, "batch_size": 4}, TINY_MODEL_INFO)
    assert few.assumptions["tokens_per_micro_batch"] == 800
    sft = estimate_for_config("sft", {"max_length": 50, "batch_size": 3}, TINY_MODEL_INFO)
    assert sft.assumptions["tokens_per_micro_batch"] == 150
