"""Skywork-OR1-style RL for long chain-of-thought (GRPO family, MAGIC recipe)."""
