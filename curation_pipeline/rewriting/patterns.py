"""Moved to ``curation_pipeline.captions.patterns`` (shared by the scorer and the cleaner, owned by
neither); this name stays for code that imported it from here."""

from curation_pipeline.captions.patterns import *  # noqa: F401,F403
