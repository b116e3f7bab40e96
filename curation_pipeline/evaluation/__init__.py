"""Measuring the pipeline: agreement of a score with human judgments, and curation decisions
against labelled samples (with a labelled-noise generator). Plain Python, no Dagster."""
