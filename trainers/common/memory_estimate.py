"""Per-GPU memory of a training run, estimated from the model's shape and the config, before it starts.

Why: a run that does not fit learns so only after loading the model, often after minutes of queueing
and rollout; launch refuses it instead (issue 10, point 10) and the run page shows the estimate next
to the measured peak (``memory/peak_gb``, ``torch.cuda.max_memory_allocated``). Pure Python (no torch):
the web host computes it from the workers' model catalogue without the model files.

The model (all numbers per GPU, in bytes):

* **Model states** (ZeRO paper, Rajbhandari et al. 2020). The torch engine keeps float32 parameters,
  float32 gradients and AdamW's two float32 moments (16 bytes/parameter, the parameters are their own
  master copy); under bf16 autocast it also holds bf16 copies of the weights (autocast caches each
  weight's cast for the forward and backward: 2 bytes/parameter). DeepSpeed in bf16 holds bf16
  parameters and gradients and keeps the float32 master copy and moments in the optimizer
  (2 + 2 + 12). ZeRO stage 1 shards the optimizer state over the ranks, stage 2 also the gradients,
  stage 3 also the parameters. The torch engine shards nothing.
* **Activations** of one micro-batch of T tokens (T = max(micro_batch_tokens, the longest sequence):
  a longer sequence gets a micro-batch of its own). Per token and layer, after Korthikanti et al.
  2022 ("Reducing Activation Recomputation in Large Transformer Models", their 34·h bytes for a GPT
  layer) adapted to a Llama/Qwen2 layer: no dropout masks, SDPA/flash attention (no stored s x s
  scores), SwiGLU (gate, up, SiLU output and product: 4 x intermediate), key/value repeated to the
  query heads (what transformers' SDPA path does with a padding mask):
  ``e·(c·h + 4q + 4f) + 2h·(4 + r)`` with e the compute dtype's bytes, r the residual stream's
  (float32 under the torch engine's autocast: the embeddings are float32), q the query width, c the
  projections' saved inputs (2, or 5 under autocast: one cast per projection), ``4 + r`` per norm
  (its float32 input and output). With gradient checkpointing (one checkpoint per decoder layer)
  only each layer's input stays, ``L·h·r`` per token, plus one layer's activations recomputed during
  its backward. Also: the final norm and the hidden states fed to the LM head, and the padding mask
  SDPA receives (rows x len x len in the compute dtype).
  Eager attention (``attn_implementation: eager``, e.g. Gemma-2) stores the scores too: per row and
  layer ``heads x len x len`` x EAGER_SCORE_BYTES (Korthikanti's ``5as^2`` term without dropout).
* **Logits**: ``token_logprobs`` projects response positions through the LM head in chunks of at most
  ``CHUNK_LOGIT_BYTES`` of float32 logits; the chunk, its log-softmax, the entropy's exp and product
  make ~LOGIT_CHUNK_COPIES copies of it. Its hand-written backward also makes, per chunk, the LM
  head's weight gradient in the parameters' dtype and (under autocast) a compute-dtype cast of the
  weight, before autograd adds the gradient into ``.grad``.
* **Rollout engine**: vLLM takes ``gpu_memory_utilization x total`` while it is awake (it sleeps during
  the update, so its share and the update's activations never coexist); the torch sampler keeps a KV
  cache for its batch of rows (prompt + response each), plus per-step sampling temporaries.
* A **reference** policy (RL with ``kl_coef > 0``) and DAPO's frozen **critic** (or, while the critic
  trains, the frozen policy: the same size), held without gradients or optimizer state.

The total is the largest of three phases: the update (model states + activations + logits), the
optimizer step (model states + AdamW's temporaries: torch's foreach AdamW allocates sqrt(v) for every
parameter at once; DeepSpeed also a float32 gradient partition) and the rollout (model states without
the torch engine's gradients, which are freed after each step, + the rollout engine).
``torch.cuda.max_memory_allocated`` measures the same things; the CUDA context and the allocator's
fragmentation come on top, so :meth:`MemoryEstimate.fits` keeps a reserve. The rollout is bounded by
``max_prompt``: a smoke test whose prompts are much shorter should set it near their length.

Not modelled: SFT's greedy evaluation (its KV cache is small next to training), CPU runs'
peculiarities (the math SDPA path stores attention scores): the estimate is for CUDA.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from trainers.common.compute_config import ModelComputeFields

GiB = 2**30

#: Mirrors trainers.common.token_batching.CHUNK_LOGIT_BYTES (that module imports torch; a test checks
#: the two agree): float32 logits one chunk of response positions may hold.
CHUNK_LOGIT_BYTES = 256 * 2**20
#: the chunk's logits, log_softmax, exp (entropy) and the gradients of the recomputed chunk
LOGIT_CHUNK_COPIES = 4
#: per-step temporaries of the torch sampler per row: float32 logits, sampling log-probs, noise, sort
SAMPLER_VOCAB_COPIES = 4
#: eager attention per score: the float32 softmax output, its cast to the compute dtype and one more
#: score-sized tensor (Gemma-2's soft-capping tanh) in the compute dtype: 4 + 2e bytes
EAGER_SCORE_FLOAT32_BYTES = 4
#: rows per chunk of the torch sampler in RL and DAPO (trainers.common.engines.make_engine)
TORCH_SAMPLER_ROWS = 256
#: DeepSpeed's default reduce / all-gather bucket (elements) and ZeRO-3's live-parameter prefetch
DEEPSPEED_BUCKET_ELEMENTS = 500_000_000
#: what max_memory_allocated does not see: CUDA context, NCCL buffers, allocator fragmentation
RESERVE_BYTES = 2 * GiB
#: DAPO has no prompt-length limit: the prompt share of a generated sequence is assumed to be this
DAPO_PROMPT_TOKENS = 1024

KINDS = ("rl", "dapo", "sft", "reward")

_COMPUTE_DEFAULTS = {name: f.default for name, f in ModelComputeFields.model_fields.items()}

#: The vocabulary and shape of trainers.common.tiny.build_tiny_model's default model (hidden 128,
#: 4 layers, 4 heads, 2 KV heads, intermediate 352, tied embeddings, 101-character vocabulary); a
#: test builds the model and checks every number.
TINY_MODEL_INFO: dict[str, Any] = {
    "architecture": "Qwen2ForCausalLM",
    "hidden_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 352,
    "vocab_size": 101,
    "tie_word_embeddings": True,
    "parameters": 752_384,
}

#: Shapes of the models the presets name (their config.json and parameter count), so a preset is
#: checked against its hardware without the model files. Launch uses the workers' catalogue instead.
REFERENCE_SHAPES: dict[str, dict[str, Any]] = {
    "Qwen2.5-0.5B-Instruct": {
        "architecture": "Qwen2ForCausalLM",
        "hidden_size": 896,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "intermediate_size": 4864,
        "vocab_size": 151936,
        "tie_word_embeddings": True,
        "parameters": 494_032_768,
    },
    "DeepSeek-R1-Distill-Qwen-7B": {
        "architecture": "Qwen2ForCausalLM",
        "hidden_size": 3584,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "intermediate_size": 18944,
        "vocab_size": 152064,
        "tie_word_embeddings": False,
        "parameters": 7_615_616_512,
    },
    "DeepSeek-R1-Distill-Qwen-32B": {
        "architecture": "Qwen2ForCausalLM",
        "hidden_size": 5120,
        "num_hidden_layers": 64,
        "num_attention_heads": 40,
        "num_key_value_heads": 8,
        "intermediate_size": 27648,
        "vocab_size": 152064,
        "tie_word_embeddings": False,
        "parameters": 32_763_876_352,
    },
    "Meta-Llama-3.1-8B-Instruct": {
        "architecture": "LlamaForCausalLM",
        "hidden_size": 4096,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "intermediate_size": 14336,
        "vocab_size": 128256,
        "tie_word_embeddings": False,
        "parameters": 8_030_261_248,
    },
    "gemma-2-27b-it": {
        "architecture": "Gemma2ForCausalLM",
        "hidden_size": 4608,
        "num_hidden_layers": 46,
        "num_attention_heads": 32,
        "num_key_value_heads": 16,
        "head_dim": 128,
        "intermediate_size": 36864,
        "vocab_size": 256000,
        "tie_word_embeddings": True,
        "parameters": 27_227_128_320,
    },
}


@dataclass(frozen=True)
class ModelShape:
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    vocab_size: int
    parameters: int
    tie_word_embeddings: bool
    head_dim: int

    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> ModelShape:
        """From a catalogue entry (config.json names); raises ValueError naming a missing/bad key."""
        need = (
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "vocab_size",
        )
        values = {}
        for key in need:
            value = info.get(key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"model info: {key} must be a positive integer, got {value!r}")
            values[key] = value
        heads = values["num_attention_heads"]
        kv = info.get("num_key_value_heads") or heads
        head_dim = info.get("head_dim") or values["hidden_size"] // heads
        shape = cls(
            **values,
            num_key_value_heads=int(kv),
            tie_word_embeddings=bool(info.get("tie_word_embeddings", False)),
            head_dim=int(head_dim),
            parameters=0,
        )
        parameters = info.get("parameters") or count_parameters(shape)
        return cls(**{**shape.__dict__, "parameters": int(parameters)})

    @property
    def q_width(self) -> int:
        return self.num_attention_heads * self.head_dim

    @property
    def kv_width(self) -> int:
        return self.num_key_value_heads * self.head_dim

    @property
    def embedding_parameters(self) -> int:
        return self.vocab_size * self.hidden_size


def count_parameters(shape: ModelShape) -> int:
    """Parameters of a Qwen2-style decoder (q/k/v biases, two RMSNorms per layer, SwiGLU MLP); used
    when the catalogue has no count. Exact for Qwen2, within ~0.1% for Llama (no biases)."""
    h, q, kv, f = shape.hidden_size, shape.q_width, shape.kv_width, shape.intermediate_size
    attention = h * q + q + 2 * (h * kv + kv) + q * h
    layer = attention + 3 * h * f + 2 * h
    head = 0 if shape.tie_word_embeddings else shape.embedding_parameters
    return shape.embedding_parameters + shape.num_hidden_layers * layer + h + head


@dataclass
class MemoryEstimate:
    """Bytes per GPU by component, which components are alive in which phase, and the inputs used."""

    components: dict[str, int]
    phases: dict[str, tuple[str, ...]]
    assumptions: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def phase_bytes(self, phase: str) -> int:
        return sum(self.components.get(name, 0) for name in self.phases[phase])

    @property
    def peak_phase(self) -> str:
        return max(self.phases, key=self.phase_bytes)

    @property
    def total(self) -> int:
        return self.phase_bytes(self.peak_phase)

    def fits(self, gpu_total_bytes: int, reserve_bytes: int = RESERVE_BYTES) -> bool:
        return self.total + reserve_bytes <= gpu_total_bytes

    def describe(self) -> str:
        """One line for a launch error: the total and the peak phase's components."""
        parts = ", ".join(
            f"{name} {gib(self.components[name])}"
            for name in self.phases[self.peak_phase]
            if self.components.get(name)
        )
        return f"~{gib(self.total)} per GPU at the {self.peak_phase} ({parts})"

    def to_dict(self) -> dict[str, Any]:
        """JSON for Run.memory_estimate and the launch API."""
        return {
            "total_bytes": self.total,
            "peak_phase": self.peak_phase,
            "components": dict(self.components),
            "phases": {name: self.phase_bytes(name) for name in self.phases},
            "phase_components": {name: list(parts) for name, parts in self.phases.items()},
            "assumptions": dict(self.assumptions),
            "notes": list(self.notes),
        }


def gib(n: int | float) -> str:
    return f"{n / GiB:.1f} GiB"


def _dtype_name(dtype: str, device: str) -> str:
    if dtype == "auto":
        return "bfloat16" if device == "cuda" else "float32"
    if dtype not in ("bfloat16", "float32"):
        raise ValueError(f"dtype must be auto, bfloat16 or float32, got {dtype!r}")
    return dtype


def model_state_bytes(
    parameters: int, *, compute_bytes: int, engine: str, zero_stage: int, world_size: int
) -> dict[str, int]:
    """Parameters, gradients, optimizer state, the optimizer step's temporaries and the torch engine's
    autocast weight copies, per GPU."""
    n = max(1, world_size)
    if engine == "deepspeed":
        # DeepSpeed: module and gradients in the compute dtype; in bf16 the optimizer adds the fp32 master
        stage = zero_stage
        params = parameters * compute_bytes
        grads = parameters * compute_bytes
        optimizer = parameters * (8 + (4 if compute_bytes < 4 else 0))
        casts = 0
        # at the step: the float32 gradient partition, and AdamW's sqrt(v) temporary over it
        step = parameters * (8 if compute_bytes < 4 else 4)
    else:
        stage = 0
        params = parameters * 4
        grads = parameters * 4
        optimizer = parameters * 8
        casts = parameters * compute_bytes if compute_bytes < 4 else 0
        step = parameters * 4  # torch's foreach AdamW allocates sqrt(v) for every parameter at once
    return {
        "parameters": params // n if stage >= 3 else params,
        "autocast_copies": casts,
        "gradients": grads // n if stage >= 2 else grads,
        "optimizer": optimizer // n if stage >= 1 else optimizer,
        "optimizer_step": step // n if stage >= 1 else step,
    }


def engine_buffer_bytes(shape: ModelShape, *, compute_bytes: int, engine: str, zero_stage: int) -> int:
    """DeepSpeed's communication buckets (stages 1-2) or ZeRO-3's gathered parameters (the embedding
    or two layers at a time, current + prefetched) plus its reduce bucket."""
    if engine != "deepspeed" or zero_stage == 0:
        return 0
    bucket = min(DEEPSPEED_BUCKET_ELEMENTS, shape.parameters) * compute_bytes
    if zero_stage < 3:
        return bucket
    per_layer = (shape.parameters - shape.embedding_parameters) // shape.num_hidden_layers
    gathered = max(shape.embedding_parameters, 2 * per_layer) * compute_bytes
    return bucket + gathered


def activation_bytes(
    shape: ModelShape,
    *,
    tokens: int,
    sequence_tokens: int,
    compute_bytes: int,
    residual_bytes: int,
    gradient_checkpointing: bool,
    autocast: bool = False,
    eager_attention: bool = False,
) -> int:
    """Activations kept for the backward of one micro-batch of ``tokens`` tokens (see module doc).

    Per layer and token, what autograd saves in a transformers Qwen2/Llama decoder layer (checked
    against a saved-tensor hook on the CPU, tests/trainers/test_memory_estimate.py):
    each RMSNorm its float32 input and normalised output (``h(4 + r)``); the projections' inputs, one
    shared tensor, or under autocast one bf16 cast per projection (q, k, v: 3; gate, up: 2); SDPA's
    query, the key and value repeated to the query heads, its output (``4q``) and log-sum-exp; the
    SwiGLU's gate, SiLU output, up and product (``4f``)."""
    h, q, f, e = shape.hidden_size, shape.q_width, shape.intermediate_size, compute_bytes
    attention_inputs, mlp_inputs = (3, 2) if autocast else (1, 1)
    norms = 2 * h * (4 + residual_bytes)
    per_layer = (
        e * (attention_inputs * h + 4 * q + mlp_inputs * h + 4 * f) + norms + 4 * shape.num_attention_heads
    )
    if gradient_checkpointing:
        # each layer's input, plus one layer recomputed during its backward and its input gradients
        kept = shape.num_hidden_layers * h * residual_bytes + per_layer + 2 * h * residual_bytes
    else:
        kept = shape.num_hidden_layers * per_layer
    final = h * (4 + residual_bytes) + h * residual_bytes  # the final norm, the hidden states the head reads
    length = max(1, min(sequence_tokens, tokens))
    mask = length * e  # the padding mask SDPA gets: rows x len x len in the compute dtype, shared by layers
    scores = 0
    if eager_attention:  # rows x heads x len x len per layer = tokens x heads x len
        per_score = EAGER_SCORE_FLOAT32_BYTES + 2 * compute_bytes
        layers = 1 if gradient_checkpointing else shape.num_hidden_layers
        scores = layers * shape.num_attention_heads * length * per_score
    return tokens * (kept + final + mask + scores)


def logit_bytes(shape: ModelShape, *, tokens: int, param_bytes: int = 4, compute_bytes: int = 4) -> int:
    """The LM head's chunked float32 logits over a micro-batch's response positions, and the chunk
    backward's weight gradient (+ the weight's cast when the parameters are wider than the compute)."""
    chunk = min(CHUNK_LOGIT_BYTES, tokens * shape.vocab_size * 4)
    cast = compute_bytes if compute_bytes < param_bytes else 0
    return LOGIT_CHUNK_COPIES * chunk + shape.embedding_parameters * (param_bytes + cast)


def kv_cache_bytes(shape: ModelShape, *, rows: int, tokens_per_row: int, compute_bytes: int) -> int:
    return 2 * shape.num_hidden_layers * shape.kv_width * compute_bytes * rows * tokens_per_row


def torch_sampler_bytes(
    shape: ModelShape, *, rows: int, prompt_tokens: int, tokens_per_row: int, compute_bytes: int
) -> int:
    """KV cache of the sampler's batch, the prefill's largest intermediate (one layer's MLP over the
    prompts, no grad) and the per-step sampling temporaries over the vocabulary."""
    cache = kv_cache_bytes(shape, rows=rows, tokens_per_row=tokens_per_row, compute_bytes=compute_bytes)
    prefill = rows * prompt_tokens * (3 * shape.intermediate_size * compute_bytes + 4 * shape.hidden_size)
    sampling = rows * shape.vocab_size * 4 * SAMPLER_VOCAB_COPIES
    return cache + prefill + sampling


def estimate(
    model_info: Mapping[str, Any],
    *,
    kind: str,
    micro_batch_tokens: int,
    gradient_checkpointing: bool,
    dtype: str = "auto",
    engine: str = "torch",
    zero_stage: int = 0,
    world_size: int = 1,
    sequence_tokens: int = 0,
    rollout_engine: str = "none",
    rollout_rows: int = 0,
    rollout_prompt_tokens: int = 0,
    rollout_tokens: int = 0,
    gpu_memory_utilization: float = 0.5,
    max_model_len: int | None = None,
    gpu_total_bytes: int | None = None,
    kl_coef: float = 0.0,
    attention: str = "sdpa",
    device: str = "cuda",
) -> MemoryEstimate:
    """Per-GPU memory of one rank of a ``kind`` run (rl, dapo, sft, reward).

    ``sequence_tokens`` is the longest sequence of the update, ``rollout_*`` the generation batch
    (rows, prompt tokens, prompt + response tokens per row). ``rollout_engine``: none, torch, vllm or
    auto (vLLM when the worker has it: the larger of the two shares, since launch may not know).
    ``attention``: sdpa or flash_attention_2 (no stored scores) or eager.
    vLLM's share needs ``gpu_total_bytes``; without it the share is left out and a note says so."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if engine not in ("torch", "deepspeed"):
        raise ValueError(f"engine must be torch or deepspeed, got {engine!r}")
    if not 0 <= zero_stage <= 3:
        raise ValueError(f"zero_stage must be 0-3, got {zero_stage!r}")
    if rollout_engine not in ("none", "torch", "vllm", "auto"):
        raise ValueError(f"rollout_engine must be none, torch, vllm or auto, got {rollout_engine!r}")
    shape = ModelShape.from_info(model_info)
    name = _dtype_name(dtype, device)
    e = 2 if name == "bfloat16" else 4
    # the torch engine keeps float32 parameters, so the embeddings and the residual stream are float32
    r = 4 if engine == "torch" else e
    world_size = max(1, int(world_size))
    notes: list[str] = []
    if engine == "torch" and zero_stage:
        notes.append("zero_stage applies to engine=deepspeed only: the torch engine shards nothing")
    tokens = max(int(micro_batch_tokens), int(sequence_tokens))
    if sequence_tokens > micro_batch_tokens:
        notes.append(
            f"a {sequence_tokens}-token sequence exceeds micro_batch_tokens ({micro_batch_tokens}) "
            "and gets a micro-batch of its own"
        )
    parts = model_state_bytes(
        shape.parameters, compute_bytes=e, engine=engine, zero_stage=zero_stage, world_size=world_size
    )
    parts["engine_buffers"] = engine_buffer_bytes(
        shape, compute_bytes=e, engine=engine, zero_stage=zero_stage
    )
    parts["activations"] = activation_bytes(
        shape,
        tokens=tokens,
        sequence_tokens=max(1, sequence_tokens or tokens),
        compute_bytes=e,
        residual_bytes=r,
        gradient_checkpointing=gradient_checkpointing,
        autocast=engine == "torch" and e < 4,
        eager_attention=attention == "eager",
    )
    param_bytes = 4 if engine == "torch" else e
    parts["logits"] = (
        0 if kind == "reward" else logit_bytes(shape, tokens=tokens, param_bytes=param_bytes, compute_bytes=e)
    )
    parts["reference"] = shape.parameters * e if (kind == "rl" and kl_coef > 0) else 0
    # DAPO: the frozen critic beside the trained actor (or the frozen policy beside the trained critic)
    frozen_bytes = 4 if engine == "torch" else e
    parts["critic"] = shape.parameters * frozen_bytes if kind == "dapo" else 0
    parts["rollout"] = 0
    if kind in ("rl", "dapo") and rollout_engine != "none":
        torch_share = torch_sampler_bytes(
            shape,
            rows=rollout_rows,
            prompt_tokens=rollout_prompt_tokens,
            tokens_per_row=rollout_tokens,
            compute_bytes=e,
        )
        vllm_share = None
        if rollout_engine in ("vllm", "auto"):
            if gpu_total_bytes:
                vllm_share = int(gpu_memory_utilization * gpu_total_bytes)
                needed = shape.parameters * 2 + kv_cache_bytes(
                    shape, rows=1, tokens_per_row=int(max_model_len or rollout_tokens), compute_bytes=2
                )
                if vllm_share < needed:
                    notes.append(
                        f"vLLM's share ({gib(vllm_share)}) is below its bf16 weights plus one "
                        f"max_model_len sequence's KV cache ({gib(needed)}): raise gpu_memory_utilization"
                    )
            else:
                notes.append(
                    "vLLM's share (gpu_memory_utilization x GPU memory) is left out: GPU size unknown"
                )
        if rollout_engine == "torch" or vllm_share is None:
            parts["rollout"] = torch_share
        elif rollout_engine == "vllm":
            parts["rollout"] = vllm_share
        else:
            parts["rollout"] = max(vllm_share, torch_share)
    update = (
        "parameters", "autocast_copies", "gradients", "optimizer", "engine_buffers",
        "activations", "logits", "reference", "critic",
    )  # fmt: skip
    # the optimizer step: activations and autocast copies are gone, AdamW's temporaries are not
    step = ("parameters", "gradients", "optimizer", "optimizer_step", "engine_buffers", "reference", "critic")
    phases = {"update": update, "step": step}
    if kind in ("rl", "dapo"):
        # the torch engine frees gradients after each optimizer step; DeepSpeed keeps its buffers
        held = [p for p in update if p not in ("activations", "logits")]
        if engine == "torch":
            held.remove("gradients")
        phases["rollout"] = (*held, "rollout")
    assumptions = {
        "kind": kind,
        "parameters": shape.parameters,
        "dtype": name,
        "engine": engine,
        "zero_stage": zero_stage if engine == "deepspeed" else 0,
        "world_size": world_size,
        "micro_batch_tokens": int(micro_batch_tokens),
        "tokens_per_micro_batch": tokens,
        "gradient_checkpointing": bool(gradient_checkpointing),
        "rollout_engine": rollout_engine if kind in ("rl", "dapo") else "none",
        "attention": attention,
    }
    if gpu_total_bytes:
        assumptions["gpu_total_bytes"] = int(gpu_total_bytes)
    return MemoryEstimate(components=parts, phases=phases, assumptions=assumptions, notes=notes)


def _get(config: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    value: Any = config
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return default
        value = value[part]
    return default if value is None else value


def _compute(config: Mapping[str, Any], name: str) -> Any:
    return _get(config, name, _COMPUTE_DEFAULTS[name])


def world_size_of(config: Mapping[str, Any], gpus_per_node: int | None = None) -> int:
    """``nproc_per_node`` (``auto``: the worker's GPUs, 1 when unknown) x ``nodes``."""
    nproc = _get(config, "nproc_per_node", 1)
    if nproc == "auto":
        nproc = gpus_per_node or 1
    return max(1, int(nproc)) * max(1, int(_get(config, "nodes", 1)))


def _rollout_engine(name: str, vllm_available: bool | None) -> str:
    if name == "auto" and vllm_available is not None:
        return "vllm" if vllm_available else "torch"
    return name


def _kind_inputs(kind: str, config: Mapping[str, Any], vllm_available: bool | None) -> dict[str, Any]:
    """What each trainer's config says about sequence lengths and generation."""
    if kind == "rl":
        stages = _get(config, "rollout.stages", []) or [{"max_response": 0}]
        response = max(int(s.get("max_response", 0)) for s in stages)
        prompt = int(_get(config, "rollout.max_prompt", 0))
        rows = int(_get(config, "rollout.n", 1)) * int(_get(config, "rollout.prompts_per_step", 1))
        return {
            "sequence_tokens": prompt + response,
            "rollout_engine": _rollout_engine(_get(config, "rollout.engine", "auto"), vllm_available),
            "rollout_rows": min(rows, TORCH_SAMPLER_ROWS),
            "rollout_prompt_tokens": prompt,
            "rollout_tokens": prompt + response,
            "gpu_memory_utilization": float(_get(config, "rollout.gpu_memory_utilization", 0.5)),
            "max_model_len": _get(config, "rollout.max_model_len", None),
            "kl_coef": float(_get(config, "algo.kl_coef", 0.0)),
        }
    if kind == "dapo":
        new = int(_get(config, "generate.max_new_tokens", 0))
        step = int(_get(config, "actor.max_step_tokens", 0))
        critic_len = int(_get(config, "critic.max_length", 0))
        return {
            "sequence_tokens": max(critic_len, DAPO_PROMPT_TOKENS + new) + step,
            "rollout_engine": _rollout_engine(_get(config, "generate.engine", "auto"), vllm_available),
            "rollout_rows": TORCH_SAMPLER_ROWS,
            "rollout_prompt_tokens": DAPO_PROMPT_TOKENS,
            "rollout_tokens": DAPO_PROMPT_TOKENS + new,
            "gpu_memory_utilization": float(_get(config, "generate.gpu_memory_utilization", 0.5)),
            "max_model_len": _get(config, "generate.max_model_len", None),
        }
    # SFT: batch_size sequences per step; reward: at most batch_size pairs per forward, a pair's chosen
    # and rejected answers together. Either way a micro-batch never holds more than the batch.
    rows = int(_get(config, "batch_size", 0)) * (1 if kind == "sft" else 2)
    length = int(_get(config, "max_length", 0))
    return {"sequence_tokens": length * (1 if kind == "sft" else 2), "batch_tokens": rows * length}


def estimate_for_config(
    kind: str,
    config: Mapping[str, Any],
    model_info: Mapping[str, Any] | None,
    gpu_total_bytes: int | None = None,
    *,
    gpus_per_node: int | None = None,
    vllm_available: bool | None = None,
    device: str = "cuda",
) -> MemoryEstimate | None:
    """The estimate of a validated trainer config (``config_validate``'s dict), or None when ``kind`` is
    not a model trainer or the model's shape is unknown. ``model_info``: a catalogue entry (config.json
    names: hidden_size, num_hidden_layers, ...; :data:`TINY_MODEL_INFO` for "tiny")."""
    if kind not in KINDS or not model_info:
        return None
    inputs = _kind_inputs(kind, config, vllm_available)
    micro = int(_compute(config, "micro_batch_tokens"))
    if inputs.get("batch_tokens"):
        micro = min(micro, inputs["batch_tokens"])
    inputs.pop("batch_tokens", None)
    dtype = _compute(config, "dtype")
    if "dtype" not in config and _get(config, "bf16", False):
        dtype = "bfloat16"  # the reward trainer's older switch
    return estimate(
        model_info,
        kind=kind,
        micro_batch_tokens=micro,
        gradient_checkpointing=bool(_compute(config, "gradient_checkpointing")),
        dtype=dtype,
        engine=_get(config, "engine", "torch"),
        zero_stage=int(_get(config, "zero_stage", 0))
        if _get(config, "engine", "torch") == "deepspeed"
        else 0,
        world_size=world_size_of(config, gpus_per_node),
        gpu_total_bytes=gpu_total_bytes,
        device=device,
        attention=_get(config, "attn_implementation", "sdpa"),
        **inputs,
    )
