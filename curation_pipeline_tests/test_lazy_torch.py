import os
import subprocess
import sys

SNIPPET = """
import sys
import curation_pipeline.definitions
from curation_pipeline.scoring.registry import score_columns, scorer_classes, bounds
score_columns(); bounds(); scorer_classes()
from curation_pipeline.scoring.profiles import ScoringProfile, build_scorers
build_scorers(ScoringProfile('offline')); build_scorers(ScoringProfile('text'))
from curation_pipeline.scoring.signals.embedding import caption_embeddings
caption_embeddings(['A dog runs on the beach .'])  # MiniLM: dedup and rewrite minimality
import io
from curation_pipeline.shards.reader import base_plus_ext
from curation_pipeline.shards.writer import write_curated
base_plus_ext('000001.jpg'); write_curated(io.BytesIO(), [('k', 'jpg', b'x', {'caption': 'c'})])
from curation_pipeline.resources import RewriterResource
print(sorted(name for name in ('torch', 'transformers') if name in sys.modules))
"""


def test_text_and_offline_profiles_do_not_import_torch():
    """Every run reads every registered scorer's columns, importing all their modules: a run of the text
    or offline profiles (no model at all) must not pay for importing torch or transformers (~1.3 s)."""
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"} | {"HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", SNIPPET], capture_output=True, text=True, env=env,
                         timeout=180, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]", out
