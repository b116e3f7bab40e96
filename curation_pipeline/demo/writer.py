"""Demo shards on disk: webdataset tars whose bytes depend on their content alone."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from curation_pipeline.demo.samples import Sample, build

_TAR_MTIME = 1_700_000_000


def _members(sample: Sample) -> list[tuple[str, bytes]]:
    members = []
    if sample.image is not None:
        members.append((f"{sample.key}.{sample.ext}", sample.image))
    if sample.caption is not None:
        members.append((f"{sample.key}.txt", sample.caption.encode("utf-8")))
    if sample.meta is not None:
        meta = json.dumps(sample.meta, ensure_ascii=False, sort_keys=True)
        members.append((f"{sample.key}.json", meta.encode("utf-8")))
    return sorted(members)


def _write_tar(path: Path, samples: tuple[Sample, ...]) -> None:
    """Every header field pinned, so the tar's bytes depend on the content alone."""
    with open(path, "wb") as f, tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for sample in samples:
            for name, payload in _members(sample):
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(payload), _TAR_MTIME, 0o644
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                tar.addfile(info, io.BytesIO(payload))


def generate_sample_shards(out_dir: str | Path, n_shards: int = 3, seed: int = 0) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for shard, samples in enumerate(build(n_shards, seed)):
        path = out / f"sample-{shard:06d}.tar"
        _write_tar(path, samples)
        paths.append(path)
    return paths

