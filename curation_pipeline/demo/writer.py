"""Demo shards on disk: webdataset tars whose bytes depend on their content alone."""

from __future__ import annotations

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
        members.append((f"{sample.key}.json", json.dumps(sample.meta, ensure_ascii=False, sort_keys=True).encode()))
    return sorted(members)


def generate_sample_shards(out_dir: str | Path, n_shards: int = 3, seed: int = 0) -> list[Path]:
    """Write the demo shards; every tar header field is pinned, so the bytes depend on the content alone."""
    from curation_pipeline.shards.writer import write_tar

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"sample-{shard:06d}.tar" for shard in range(n_shards)]
    for path, samples in zip(paths, build(n_shards, seed)):
        write_tar(path, (m for sample in samples for m in _members(sample)), mtime=_TAR_MTIME,
                  tar_format=tarfile.USTAR_FORMAT)
    return paths

