"""notifications: models (filled by issue 15)."""
