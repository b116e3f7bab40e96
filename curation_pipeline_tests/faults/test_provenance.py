"""Provenance is never dropped: the source sample's json travels whole into the curated sidecar
(``test_hostile_input``), and ``curate export-uids`` writes the kept uids as DataComp's subset file,
which its ``resharder.py`` reads to apply the selection to the original pool."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import pytest
from click.testing import CliRunner

from curation_pipeline.cli import EXIT_BAD_INPUT, main
from curation_pipeline.shards.uids import UID_DTYPE, uid_array
from curation_pipeline_tests.faults import builders

pytestmark = pytest.mark.faults

U16 = np.dtype("u8,u8")  # datacomp/resharder.py, verbatim


def datacomp_selects(subset: np.ndarray, key_str: str) -> bool:
    """DataComp's resharder.py, process_example: the uid -> u16 scalar, then searchsorted."""
    key_u16 = np.array([divmod(int(key_str, 16), 2**64)], U16)[0]
    a = np.searchsorted(subset, key_u16, "left")
    b = np.searchsorted(subset, key_u16, "right")
    return bool(b - a)


def test_export_uids_writes_datacomps_subset_format(hostile_run, tmp_path):
    hostile, _, _ = hostile_run
    out = tmp_path / "kept.npy"
    result = CliRunner().invoke(main, ["export-uids", "--warehouse", str(hostile.warehouse), "--shard", "badjson",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    with tarfile.open(hostile.warehouse / "curated" / "badjson.tar") as tar:
        sidecars = [json.loads(tar.extractfile(m).read()) for m in tar.getmembers() if m.name.endswith(".json")]
    kept = sorted((s["source"] or {}).get("uid") for s in sidecars if (s["source"] or {}).get("uid"))
    assert builders.DATACOMP_META["uid"] in kept and len(kept) == 3
    assert f"3 uids from {len(sidecars)} curated samples in 1 shards" in result.output
    assert f"{len(sidecars) - 3} samples without a uid in their source json" in result.output
    # as resharder.py loads it: np.load, dtype u8,u8 (little-endian), sorted
    with open(out, "rb") as handle:
        assert handle.read(6) == b"\x93NUMPY"
    subset = np.load(out, mmap_mode="r")
    assert subset.dtype == U16 and subset.dtype.fields["f0"][0].str == "<u8"
    assert subset.tolist() == sorted(subset.tolist()) and len(subset) == 3
    for uid in kept:
        assert datacomp_selects(subset, uid)
    # a file where its folder should be: a one-line error, exit 2, nothing written
    (tmp_path / "afile").write_text("x")
    result = CliRunner().invoke(main, ["export-uids", "--warehouse", str(hostile.warehouse), "--shard", "badjson",
                                       "--out", str(tmp_path / "afile" / "kept.npy")])
    assert result.exit_code == EXIT_BAD_INPUT and "cannot write" in result.output, result.output
    assert not any(p.name.endswith(".partial") for p in tmp_path.iterdir())
    assert not datacomp_selects(subset, "ffffffffffffffffffffffffffffffff")


def test_uid_pairs_split_the_128_bits_as_datacomp():
    array = uid_array(["00000000000000010000000000000002", "ff" * 16, "1", "00000000000000010000000000000002"])
    assert array.dtype == UID_DTYPE == U16
    assert array.tolist() == [(0, 1), (1, 2), (2**64 - 1, 2**64 - 1)]  # sorted, de-duplicated
    with pytest.raises(ValueError, match="hex"):
        uid_array(["not-a-uid"])


def test_export_uids_without_curated_shards_is_bad_input(tmp_path):
    result = CliRunner().invoke(main, ["export-uids", "--warehouse", str(tmp_path), "--out", str(tmp_path / "x.npy")])
    assert result.exit_code == EXIT_BAD_INPUT and "no curated shard" in result.output
