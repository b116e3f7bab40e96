"""The warehouse tests' stores."""

import pytest


@pytest.fixture(params=["local", "s3"])
def warehouse_root(request, tmp_path, monkeypatch):
    """A local warehouse, and one on an S3-compatible server (s3rver, as in the scale tests)."""
    if request.param == "local":
        yield str(tmp_path / "wh")
        return
    from curation_pipeline_tests.scale.helpers import S3Server, fresh_s3fs, require, s3_available

    ok, why = s3_available()
    require(ok, why)
    with S3Server(tmp_path) as server:
        for name, value in server.env.items():
            monkeypatch.setenv(name, value)
        fresh_s3fs()
        yield f"s3://{server.bucket}/wh"
    fresh_s3fs()
