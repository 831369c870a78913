"""Run-page chart preferences: pins per user per project (issue 16 point 2)."""

__all__: list[str] = []
