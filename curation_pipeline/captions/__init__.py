"""Caption text facts shared by the scorer and the cleaner (no Dagster, no rewriting, no scoring)."""
