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


def test_a_prefetched_model_is_the_one_a_step_gets_and_is_built_once(monkeypatch):
    """``curate run`` loads MiniLM in a background thread; a step that asks meanwhile waits for that copy
    instead of building a second one."""
    from curation_pipeline.scoring.signals import embedding

    built = []

    class Counted(embedding.MiniLM):
        def __init__(self, *args, **kwargs):
            built.append(1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(embedding, "MiniLM", Counted)
    monkeypatch.setenv(THREADS_ENV, "1")
    embedding._minilm.cache_clear()
    try:
        thread = embedding.prefetch_minilm()
        asked = load_minilm()  # at once: the thread is still loading
        thread.join()
        assert len(built) == 1 and isinstance(asked, Counted)
        assert load_minilm() is asked and threads_of(asked) == 1
    finally:
        embedding._minilm.cache_clear()  # no Counted copy left for later tests
