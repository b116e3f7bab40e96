"""Security: no remote code unless enabled per model, no unpickling of shard members, SQL with
parameters, servers on 127.0.0.1, and nothing from a shard or key writes outside the warehouse.
"""

from __future__ import annotations

import os
import re
import tarfile
from pathlib import Path

import pytest

from curation_pipeline.models import loading
from curation_pipeline.reporting.lineage import caption_history
from curation_pipeline.shards.keys import InvalidShardName
from curation_pipeline.storage.warehouse import Warehouse
from curation_pipeline_tests.processes import processes_with_env
from curation_pipeline_tests.conftest import REPO_ROOT

pytestmark = pytest.mark.faults


class _Fake:
    chat_template = "{{ messages }}"
    model_type = "clip"

    def __getattr__(self, name):
        return lambda *a, **k: self


@pytest.fixture
def from_pretrained_calls(monkeypatch):
    import transformers

    calls = []
    for name in ("AutoConfig", "AutoModel", "AutoProcessor", "AutoTokenizer", "AutoModelForImageTextToText",
                 "AutoModelForCausalLM"):
        cls = getattr(transformers, name)

        def fake(source, *args, _name=name, **kwargs):
            calls.append((_name, source, kwargs))
            return _Fake()

        monkeypatch.setattr(cls, "from_pretrained", staticmethod(fake))
    return calls


def test_trust_remote_code_is_never_passed_unless_enabled(from_pretrained_calls):
    loading.load_clip("org/clip")
    loading.load_vlm("org/vlm")
    assert from_pretrained_calls and all("trust_remote_code" not in kw for *_, kw in from_pretrained_calls)
    from_pretrained_calls.clear()
    loading.load_vlm("org/vlm", trust_remote_code=True)
    assert from_pretrained_calls and all(kw.get("trust_remote_code") is True for *_, kw in from_pretrained_calls)


def test_trust_remote_code_is_per_model(monkeypatch):
    """The MLM scorer gets it only when its own model id is listed; the released AITQE checkpoint
    needs none (its layout maps onto native classes)."""
    from curation_pipeline.scoring.mlm import scorer as mlm_scorer
    from curation_pipeline.scoring.profiles import ScoringProfile, build_scorers

    seen = []

    class Stop(Exception):
        pass

    def fake_load_vlm(model, **kwargs):
        seen.append((model, kwargs.get("trust_remote_code", False)))
        raise Stop

    monkeypatch.setattr(mlm_scorer, "load_vlm", fake_load_vlm)
    for allowed, expected in (((), False), (("org/other",), False), (("org/vlm",), True)):
        with pytest.raises(Stop):
            build_scorers(ScoringProfile(name="mlm", mlm_model="org/vlm", trust_remote_code=allowed))
        assert seen.pop() == ("org/vlm", expected)
    from curation_pipeline.rewriting import aitqe
    from curation_pipeline_tests.tiny_models import RELEASED

    monkeypatch.setattr(aitqe, "load_vlm", fake_load_vlm)  # a chat-VLM load would be the remote-code path
    rewriter = aitqe.AitqeRewriter(str(RELEASED / "aitqe-tiny"), vision_tower=str(RELEASED / "siglip-tiny-patch8-32"))
    assert isinstance(rewriter.generator, aitqe.AitqeGenerator) and not seen


def test_pickle_members_in_a_shard_are_never_unpickled(hostile_run):
    hostile, _, results = hostile_run
    assert results["hostile"].success
    assert not hostile.marker.exists()  # unpickling any of pk.pyd / pk.pickle / pk.pth would create it
    skips = Warehouse(str(hostile.warehouse)).read_table("skips", "hostile")
    assert set(skips.loc[skips["key"].eq("pk"), "member"]) == {"pk.pyd", "pk.pickle", "pk.pth"}


def test_sample_keys_never_escape_the_warehouse_or_the_tar(hostile_run):
    hostile, _, _ = hostile_run
    root = hostile.warehouse.parent
    outside = [p for p in root.rglob("*") if "evil" in p.name]
    assert outside == []
    assert not Path("/abs/evil.jpg").exists()
    for curated in (hostile.warehouse / "curated").glob("*.tar"):
        with tarfile.open(curated) as tar:
            for name in tar.getnames():
                assert not name.startswith("/") and ".." not in name.split("/") and "/" not in name, name
    skips = Warehouse(str(hostile.warehouse)).read_table("skips", "hostile")
    assert set(skips.loc[skips["reason"].eq("unsafe_key"), "key"]) == {"../evil", "/abs/evil"}
    everything = {p.resolve() for p in hostile.warehouse.rglob("*")}
    assert all(str(p).startswith(str(hostile.warehouse.resolve())) for p in everything)


@pytest.mark.parametrize("key", ["x' OR '1'='1", "'; DROP TABLE final_captions; --", "%", "*"])
def test_lineage_lookups_bind_parameters(hostile_run, key):
    hostile, _, _ = hostile_run
    wh = Warehouse(str(hostile.warehouse))
    history = caption_history(wh, key=key)
    assert history.final.empty and history.attempts.empty
    assert len(caption_history(wh, key="good000001").final) == 1  # nothing was dropped or altered
    with pytest.raises(InvalidShardName):
        caption_history(wh, shard="x' OR '1'='1")


@pytest.mark.parametrize("shard", ["../etc", "..", "a/b", "/abs", "x' OR '1'='1", "", "a b"])
def test_partition_keys_with_path_characters_are_refused_by_the_warehouse(tmp_path, shard):
    import pandas as pd

    from curation_pipeline.resources import WarehouseResource

    wh = Warehouse(str(tmp_path / "wh"))
    with pytest.raises(InvalidShardName):
        wh.write_table("pairs", shard, pd.DataFrame({"key": ["a"]}))
    with pytest.raises(InvalidShardName):
        wh.curated_path(shard)
    with pytest.raises(InvalidShardName):
        WarehouseResource(raw_root=str(tmp_path), root=str(tmp_path / "wh")).raw_url(shard)
    assert not any(tmp_path.rglob("*.parquet"))


def test_credentials_typed_into_a_warehouse_url_reach_no_run_record(tmp_path, monkeypatch):
    """s3fs reads s3://KEY:SECRET@bucket as a bucket named so: a Dagster run (the UI's, a schedule's) reached botocore
    before any check, and its error, secret included, went into the event log and the compute logs. The resource
    refuses such a URL when the run starts, masked; `curate run` says the same."""
    import dagster as dg
    from click.testing import CliRunner

    from curation_pipeline.assets.ingest import pairs
    from curation_pipeline.cli import main
    from curation_pipeline.definitions import build_resources
    from curation_pipeline.resources import WarehouseResource

    secret = "Very-Secret-77"
    url = f"s3://AKIDEXAMPLE:{secret}/x@bucket/raw"
    monkeypatch.setenv("CURATION_RAW", url)  # read when the run starts (dg.EnvVar)
    monkeypatch.setenv("CURATION_WAREHOUSE", str(tmp_path / "wh"))
    (tmp_path / "home").mkdir()
    instance = dg.DagsterInstance.local_temp(str(tmp_path / "home"))
    instance.add_dynamic_partitions("shards", ["s-000000"])
    result = dg.materialize([pairs], partition_key="s-000000", resources=build_resources(), instance=instance,
                            raise_on_error=False)
    assert not result.success
    said = "\n".join(str(e.event_specific_data) for e in result.all_events)
    assert "s3://***@bucket/raw: credentials in a URL are refused" in said
    stored = [p for p in (tmp_path / "home").rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert stored == [] and "AKIDEXAMPLE" not in said
    for field in ("raw_root", "root"):
        with pytest.raises(ValueError) as refused:
            WarehouseResource(**{field: "s3://AKIDEXAMPLE:" + secret + "@bucket/raw"})
        assert secret not in str(refused.value) and "AKIDEXAMPLE" not in str(refused.value)
    for path in ("s3://bucket/laion/part@2024/raw", "file:///mnt/backup@nas/raw", "hf://datasets/org/s@main/raw"):
        assert WarehouseResource(raw_root=path).raw_root == path  # an "@" in a path is no credentials
    ran = CliRunner().invoke(main, ["run", "--raw", str(tmp_path), "--warehouse", url.replace("/raw", "/wh")])
    assert ran.exit_code == 2 and secret not in ran.output
    assert "warehouse.root: s3://***@bucket/wh: credentials in a URL are refused" in ran.output


def _texts():
    files = [REPO_ROOT / "Makefile", REPO_ROOT / "README.md", REPO_ROOT / "workspace.yaml",
             *sorted((REPO_ROOT / "docs").glob("**/*.md")), *sorted((REPO_ROOT / "curation_pipeline").rglob("*.py")),
             *sorted((REPO_ROOT / "benchmarks").glob("*.py"))]
    return [f for f in files if f.exists()]


def test_every_server_binds_to_loopback():
    makefile = (REPO_ROOT / "Makefile").read_text()
    ui = re.search(r"^ui:.*?(?=^\S|\Z)", makefile, re.DOTALL | re.MULTILINE).group(0)
    assert "dagster dev" in ui and "-h 127.0.0.1" in ui
    starts = []
    for path in _texts():
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        for n, line in enumerate(lines, 1):
            assert "0.0.0.0" not in line, f"{path}:{n}: {line}"
            # a command line, not prose (also one whose dagster is a variable: ``f"{dagster} dev -m ..."``)
            if re.search(r"dagster\w*\}? dev\s+-|dagster[-_]webserver\s+-", line):
                starts.append((path, n, line))
                command = line + (lines[n] if n < len(lines) else "")  # a string continued on the next line
                assert re.search(r"(-h|--host)[ =]127\.0\.0\.1", command), f"{path}:{n} starts a server: {line}"
    assert any(p.name == "Makefile" for p, *_ in starts) and any(p.name == "cli.py" for p, *_ in starts)


def _listening(pids: set[int]) -> set[tuple[str, int]]:
    """(address, port) of every listening TCP socket the given processes hold (from /proc)."""
    import ipaddress

    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                try:
                    target = os.readlink(fd)
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    found = set()
    for table, width in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A = LISTEN
                continue
            address, port = local.split(":")
            raw = bytes.fromhex(address)
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # each 32-bit word is little-endian
            found.add((str(ipaddress.ip_address(raw)), int(port, 16)))
    return found


def test_dagster_dev_as_make_ui_starts_it_listens_on_loopback_only(tmp_path):
    """Start the Makefile's own `ui` command (on a free port) and read from /proc which addresses its
    processes (webserver, daemon, code server) actually listen on: loopback only, the UI on 127.0.0.1."""
    import ipaddress
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request
    import uuid

    makefile = (REPO_ROOT / "Makefile").read_text()
    recipe = re.search(r"^ui:.*?(?=^\S|\Z)", makefile, re.DOTALL | re.MULTILINE).group(0)
    command = next(line.strip() for line in recipe.splitlines() if "dagster dev" in line)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = command.replace("$(BIN)", str(Path(sys.executable).parent)).split()
    argv[argv.index("-p") + 1] = str(port)
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    marker = f"CURATION_LOOPBACK_TEST={uuid.uuid4().hex}"
    env = {**os.environ, "DAGSTER_HOME": str(home), "CURATION_RAW": str(tmp_path / "raw"),
           "CURATION_WAREHOUSE": str(tmp_path / "wh"), "HF_HUB_OFFLINE": "1", "DAGSTER_DISABLE_TELEMETRY": "1",
           marker.split("=")[0]: marker.split("=")[1]}
    env.pop("CURATION_AUTOMATION", None)
    log = (tmp_path / "dev.log").open("wb")
    proc = subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 150
        while True:
            assert proc.poll() is None, (tmp_path / "dev.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "dagster dev did not answer in 150 s"
            time.sleep(1)
        time.sleep(3)  # the daemon and the code server finish starting
        sockets = _listening(set(processes_with_env(marker.encode())))
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=15)
                break
            except subprocess.TimeoutExpired:
                continue
        log.close()
    ui = {address for address, p in sockets if p == port}
    assert ui == {"127.0.0.1"}, sockets
    assert all(ipaddress.ip_address(address).is_loopback for address, _ in sockets), sockets
