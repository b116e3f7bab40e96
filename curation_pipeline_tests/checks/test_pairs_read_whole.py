"""A shard whose samples were lost before any scoring says so on ``pairs`` (a WARN check, never blocking): every
sample skipped (keys with a dot) finished ok with 0 pairs, and a damaged tar was ok everywhere but ``curate run``'s
console; the skips table alone said why."""

import io
import tarfile

from click.testing import CliRunner

from curation_pipeline.cli import main
from curation_pipeline_tests.conftest import RAW_SAMPLES


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_a_shard_of_dotted_keys_and_a_damaged_one_warn_on_pairs(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    raw = tmp_path / "raw"
    raw.mkdir()
    source = tarfile.open(RAW_SAMPLES / "sample-000000.tar")
    members = [m for m in source.getmembers() if m.isfile()][:12]
    with tarfile.open(raw / "dots.tar", "w") as out:  # every key has a dot: "photo.0000.jpg" is key "photo"
        for i, member in enumerate(members):
            stem, ext = member.name.split(".", 1)
            _add(out, f"photo.{i // 3:04d}.{ext}", source.extractfile(member).read())
    whole = (RAW_SAMPLES / "sample-000001.tar").read_bytes()
    (raw / "cut.tar").write_bytes(whole[: len(whole) // 2 + 100])
    result = CliRunner().invoke(main, ["run", "--raw", str(raw), "--warehouse", str(tmp_path / "wh"), "--profile",
                                       "text", "--no-report"])
    assert "check pairs_read_whole failed: no pair read; " in result.output, result.output
    assert "most often unsupported_member" in result.output and "rename it without a dot in the key" in result.output
    assert "check pairs_read_whole failed: the raw file is damaged, nothing after it was read: truncated_tar" in \
        result.output, result.output


def test_a_whole_shard_passes_and_files_beside_its_samples_are_no_loss():
    import pandas as pd

    from curation_pipeline.checks.quality import pairs_read_whole, skips_summary

    pairs = pd.DataFrame({"key": ["a", "b"]})
    beside = pd.DataFrame({"reason": ["unsupported_member", "extra_image", "unsupported_member"],
                           "detail": [".cls is never parsed", "", ".npy is never parsed"]})
    said = pairs_read_whole(pairs, skips_summary(beside))
    assert said.passed and said.description == "2 pairs read, 3 members skipped"
    lost = pd.DataFrame({"reason": ["duplicate_key", "unsafe_key", "unsafe_key"], "detail": ["", "", ""]})
    said = pairs_read_whole(pairs, skips_summary(lost))
    assert not said.passed and said.description == ("3 members of samples skipped (unsafe, repeated, unreadable or "
                                                    "dotted keys), more than the 2 pairs read")
