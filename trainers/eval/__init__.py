"""Benchmark evaluation: k samples per problem, avg@k and unbiased pass@k (``core``: ``Problem``,
``load_problems``, ``pass_at_k``, ``evaluate``; ``run``: one checkpoint on one benchmark file, what the
platform's on-demand evaluation runs). Imports only trainers.base and trainers.common."""
