"""Evaluation policies of runs (issue 15 point 4)."""

__all__: list[str] = []
