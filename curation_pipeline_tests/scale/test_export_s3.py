"""``curate export-uids`` on a warehouse on object storage (a real S3 server, s3rver): the curated tars
are listed and read from the bucket, as from a local warehouse."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

from click.testing import CliRunner

from curation_pipeline.cli import EXIT_BAD_INPUT, main
from curation_pipeline_tests.conftest import RAW_SAMPLES, run_pipeline


def _with_uids(source, target) -> set[str]:
    """A copy of a raw shard whose json sidecars carry a DataComp-style ``uid``; returns the uids."""
    uids = set()
    with tarfile.open(source) as src, tarfile.open(target, "w") as out:
        for info in src:
            data = src.extractfile(info).read()
            if info.name.endswith(".json"):
                uid = hashlib.md5(info.name.encode()).hexdigest()
                data = json.dumps({**json.loads(data), "uid": uid}).encode()
                uids.add(uid)
                info.size = len(data)
            out.addfile(info, io.BytesIO(data))
    return uids


def test_export_uids_reads_the_curated_tars_in_the_bucket(s3, tmp_path):
    server, fs = s3
    raw, local = tmp_path / "raw", tmp_path / "wh"
    raw.mkdir()
    shards = ["sample-000000", "sample-000001"]
    for shard in shards:
        _with_uids(RAW_SAMPLES / f"{shard}.tar", raw / f"{shard}.tar")
    _, results = run_pipeline(raw, local, shards, report=False)
    assert all(r.success for r in results.values())
    for tar in sorted((local / "curated").glob("*.tar")):
        fs.put(str(tar), f"{server.bucket}/wh/curated/{tar.name}")
    remote = f"s3://{server.bucket}/wh"

    def export(warehouse, name, *args):
        result = CliRunner().invoke(main, ["export-uids", "--warehouse", warehouse,
                                           "--out", str(tmp_path / name), *args])
        return result, (tmp_path / name).read_bytes() if result.exit_code == 0 else None

    (here, local_npy), (there, remote_npy) = export(str(local), "local.npy"), export(remote, "s3.npy")
    assert here.exit_code == there.exit_code == 0, there.output
    assert there.output.replace("s3.npy", "x") == here.output.replace("local.npy", "x")
    assert "in 2 shards" in there.output and not there.output.startswith("0 uids")
    assert remote_npy == local_npy  # the same subset file, byte for byte

    one, _ = export(remote, "one.npy", "--shard", "sample-000001")
    assert one.exit_code == 0 and "in 1 shards" in one.output, one.output
    missing, _ = export(remote, "none.npy", "--shard", "sample-000009")
    assert missing.exit_code == EXIT_BAD_INPUT and "sample-000009" in missing.output
    empty, _ = export(f"s3://{server.bucket}/nothing-here", "empty.npy")
    assert empty.exit_code == EXIT_BAD_INPUT and "no curated shard at all" in empty.output
