"""The shared MiniLM follows the thread budget in force when it is asked for, not the first one."""

import numpy as np

from curation_pipeline.scoring.signals import THREADS_ENV
from curation_pipeline.scoring.signals.embedding import caption_embeddings, load_minilm


def threads_of(model) -> int:
    return model.session.get_session_options().intra_op_num_threads


def test_a_changed_thread_budget_gets_a_session_of_its_size(monkeypatch):
    monkeypatch.setenv(THREADS_ENV, "2")
    two = load_minilm()
    assert threads_of(two) == 2
    vectors = caption_embeddings(["A dog runs on the beach ."])
    monkeypatch.setenv(THREADS_ENV, "1")  # e.g. a scoring resource with threads: 1 in the same process
    one = load_minilm()
    assert threads_of(one) == 1
    assert load_minilm() is one  # still built once per budget
    np.testing.assert_allclose(caption_embeddings(["A dog runs on the beach ."]), vectors, atol=1e-6)
