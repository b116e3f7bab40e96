"""A cluster whose workers lack this package says so: over Ray Client the driver got the workers'
``ModuleNotFoundError`` bare, as if the driver lacked the package it is running; through a GCS address, a
``RayTaskError`` of a ``RaySystemError`` (both seen on a real two-node cluster whose nodes could not import it)."""

import pytest
import ray

from curation_pipeline.compute import ray_data
from curation_pipeline.compute.options import RayOptions

SAID = "the Ray cluster's nodes cannot import this package (No module named 'curation_pipeline'): the driver has it"


class _Task:
    def remote(self, *args, **kwargs):
        return "ref"


@pytest.fixture
def raising(monkeypatch):
    """``_on_cluster``'s task, whose result raises ``raised[0]`` (no Ray started)."""
    raised = []
    monkeypatch.setattr(ray, "remote", lambda **options: lambda fn: _Task())

    def get(ref, options, asks):
        raise raised[0]

    monkeypatch.setattr(ray_data, "_get", get)
    return raised


@pytest.mark.parametrize("error", [
    ModuleNotFoundError("No module named 'curation_pipeline'", name="curation_pipeline"),  # over Ray Client
    ModuleNotFoundError("No module named 'curation_pipeline.compute'", name="curation_pipeline.compute"),
    ray.exceptions.RaySystemError("No module named 'curation_pipeline'"),  # through the GCS, inside a RayTaskError
])
def test_workers_without_the_package_are_said_to_lack_it(raising, error):
    raising.append(error)
    with pytest.raises(ModuleNotFoundError, match="the Ray cluster's nodes cannot import this package") as got:
        ray_data._on_cluster(RayOptions(), print)
    assert got.value.__cause__ is error and "Install this version of curation-pipeline" in str(got.value)
    if error.args[0].endswith("'curation_pipeline'"):
        assert SAID in str(got.value)


@pytest.mark.parametrize("error", [ModuleNotFoundError("No module named 'open_clip'", name="open_clip"),
                                   ray.exceptions.RaySystemError("the object store is full")])
def test_other_errors_pass_as_they_are(raising, error):
    raising.append(error)
    with pytest.raises(type(error)) as got:
        ray_data._on_cluster(RayOptions(), print)
    assert got.value is error
