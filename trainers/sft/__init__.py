"""Supervised fine-tuning on problem/solution pairs: the warm start of the RL demo."""
