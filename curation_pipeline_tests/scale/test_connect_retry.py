import pytest
from dagster_ray import RayResource

from curation_pipeline.resources import ComputeResource


def test_a_connection_whose_server_died_at_start_is_tried_afresh(monkeypatch):
    calls = []

    def flaky(self, context):
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionAbortedError("Starting Ray client server failed")
        return "connected"

    monkeypatch.setattr(RayResource, "connect", flaky)
    assert ComputeResource(engine="ray", address="ray://127.0.0.1:1").connect(None) == "connected"
    assert len(calls) == 3


def test_it_gives_up_after_three_tries_and_other_errors_are_not_retried(monkeypatch):
    calls = []

    def broken(self, context):
        calls.append(1)
        raise ConnectionAbortedError("down")

    monkeypatch.setattr(RayResource, "connect", broken)
    with pytest.raises(ConnectionAbortedError):
        ComputeResource(engine="ray", address="ray://127.0.0.1:1").connect(None)
    assert len(calls) == 3

    monkeypatch.setattr(RayResource, "connect", lambda self, context: (_ for _ in ()).throw(ValueError("bad")))
    with pytest.raises(ValueError):
        ComputeResource(engine="ray", address="ray://127.0.0.1:1").connect(None)
