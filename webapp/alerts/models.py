"""health rules and events: models (filled by issue 15)."""
