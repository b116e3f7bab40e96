"""Caption text facts shared by the scorer and the cleaner (no Dagster, no rewriting, no scoring).

``captions.patterns`` holds the caption noise patterns: ``scoring.text_quality`` flags a
caption with them and ``rewriting.cleaner`` repairs what they find. Neither imports the
other. The rewrite acceptance check in ``rewriting.verify`` deliberately does NOT use
this module, so it can see what these patterns miss.
"""
