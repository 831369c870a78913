"""Pieces shared by the language-model trainers (GRPO and friends); import the submodules directly.

Model and rollout plumbing:

* ``tiny``: a char-level tokenizer and a random-init Qwen2-style model built locally (CPU demos, tests).
* ``models``: ``load_policy`` / ``load_value_model`` from local directories, ``resolve_model_path``
  ("tiny", a catalogue name or a path to a directory), ``seed_everything``.
* ``checkpoints``: writing and reading policy checkpoints and trainer state.
* ``rollout``: the ``RolloutEngine`` interface, ``Completion``, and ``TorchSampler`` (KV cache).
* ``vllm_engine``: ``VllmEngine`` for GPU hosts (vLLM imported lazily); ``engines.make_engine`` picks
  vLLM or the torch sampler.
* ``rollout_batch``: completions as training tensors (``build_batch``); ``policy_step``: the policy
  seen as its loss sees it (``PolicyLogprobs``) and the torch / DeepSpeed gradient steppers.
* ``demo_data`` and ``arith``: generated preference pairs and arithmetic problems (demos, tests).

The layering (tests/test_trainer_boundaries.py): ``trainers.base`` <- ``trainers.common`` <-
``trainers.eval`` <- the method packages (rl, dapo, sft, reward, tabular, regression, synthetic). A
method package imports only those three (and ``trainers.cli`` for its command line), never another
method package; what two of them need lives here or in ``trainers.eval``.

Nothing here imports the web stack, and this file imports nothing, so ``import trainers.common``
stays free of torch until a submodule is used.
"""
