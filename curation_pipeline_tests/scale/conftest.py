"""The S3-compatible server (s3rver, a separate process on loopback) the object-storage tests share."""

import pytest

from curation_pipeline_tests.scale.helpers import S3Server, fresh_s3fs, require, s3_available


@pytest.fixture
def s3(tmp_path, monkeypatch):
    """A fresh server and an s3fs filesystem on it; the standard AWS variables point at it."""
    ok, why = s3_available()
    require(ok, why)
    with S3Server(tmp_path) as server:
        for name, value in server.env.items():
            monkeypatch.setenv(name, value)
        yield server, fresh_s3fs()
    fresh_s3fs()
