"""Pieces shared by the language-model trainers (GRPO and friends); import the submodules directly.

Model and rollout plumbing:

* ``tiny``: a char-level tokenizer and a random-init Qwen2-style model built locally (CPU demos, tests).
* ``models``: ``load_policy`` / ``load_value_model`` from local directories, ``seed_everything``.
* ``rollout``: the ``RolloutEngine`` interface, ``Completion``, and ``TorchSampler`` (KV cache).
* ``vllm_engine``: ``VllmEngine`` for GPU hosts (vLLM imported lazily).

Nothing here imports the web stack, and this file imports nothing, so ``import trainers.common``
stays free of torch until a submodule is used.
"""
