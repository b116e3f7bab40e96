"""Shared fixtures. HF_HUB_OFFLINE is set before anything imports transformers."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
EVALDATA = REPO_ROOT.parent / "shared" / "evaldata"
FLICKR = EVALDATA / "flickr8k_1k_small"


@pytest.fixture(scope="session")
def flickr_dir() -> Path:
    if not FLICKR.exists():
        pytest.skip(f"evaldata not found at {FLICKR}")
    return FLICKR
