"""The Dagster UI end to end: `dagster dev` on 127.0.0.1 driven by Debian's headless Chromium.

One `dagster dev` (temp DAGSTER_HOME, warehouse and raw folder with two sample shards) serves
both tests. The first materializes partition ``sample-000000`` through the launch dialog, then
reads the lineage table, the caption-length histogram and the checks from the UI; the second
launches a backfill of all shards from the UI and cancels it. Screenshots go to pytest's tmp dir
and, when ``UI_SCREENSHOTS_DIR`` is set, also (small, viewport-sized) into that folder.

Never downloads a browser: Playwright is pointed at ``/usr/bin/chromium``.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from curation_pipeline_tests.conftest import RAW_SAMPLES, REPO_ROOT

CHROMIUM = Path("/usr/bin/chromium")
SHARDS = ["sample-000000", "sample-000001"]
GROUPS = ["ingest", "scoring", "decisions", "rewriting", "curation", "reporting"]
JOB_PATH = "/locations/curation_pipeline/jobs/curate_shards"  # workspace.yaml names the location
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# the community pop-up Dagster shows on a first visit; marking it seen keeps it off the screenshots
SKIP_COMMUNITY_POPUP = "window.localStorage.setItem('communityNux', '\"1\"')"
# the default executor starts a process per step (~25 s of imports each on 2 cores); one process is enough
DOCS_PNG_LIMIT = 250_000

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(),
                       reason="needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes_with_env(marker: bytes) -> list[int]:
    """PIDs whose environment holds ``marker`` (our temp DAGSTER_HOME): every process we started."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def _stop_group(proc: subprocess.Popen, marker: bytes, timeout: float = 10.0) -> None:
    """SIGTERM the whole process group, SIGKILL what is left after ``timeout``."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        for pid in _processes_with_env(marker):  # anything that left the group (none expected)
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if proc.poll() is not None and not _processes_with_env(marker):
                return
            time.sleep(0.5)


class Screens:
    """Full-page PNGs into pytest's tmp dir; small viewport copies into UI_SCREENSHOTS_DIR."""

    def __init__(self, folder: Path):
        self.folder = folder
        docs = os.environ.get("UI_SCREENSHOTS_DIR")
        self.docs = Path(docs) if docs else None
        if self.docs:
            self.docs.mkdir(parents=True, exist_ok=True)

    def save(self, page, name: str, docs: bool = False) -> Path:
        path = self.folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        if docs and self.docs:
            _write_small_png(page.screenshot(full_page=False), self.docs / f"{name}.png")
        return path


def _write_small_png(png: bytes, out: Path) -> None:
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    for scale in (1.0, 0.85, 0.7, 0.55):
        shown = image if scale == 1.0 else image.resize(
            (int(image.width * scale), int(image.height * scale)), Image.LANCZOS)
        buffer = io.BytesIO()
        shown.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(buffer, format="PNG", optimize=True)
        if buffer.tell() <= DOCS_PNG_LIMIT:
            break
    out.write_bytes(buffer.getvalue())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`dagster dev -w workspace.yaml` on a free loopback port, with its own home, raw and warehouse."""
    import dagster as dg

    root = tmp_path_factory.mktemp("ui")
    home, raw, warehouse, shots = (root / n for n in ("dagster_home", "raw", "warehouse", "screenshots"))
    for folder in (home, raw, warehouse, shots):
        folder.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    for shard in SHARDS:
        shutil.copy(RAW_SAMPLES / f"{shard}.tar", raw / f"{shard}.tar")
    instance = dg.DagsterInstance.from_config(str(home))
    instance.add_dynamic_partitions("shards", SHARDS)  # what the new_shards_sensor does on its first tick

    port = _free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "CURATION_RAW": str(raw), "CURATION_WAREHOUSE": str(warehouse),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "GX_ANALYTICS_ENABLED": "false",
           "DAGSTER_DISABLE_TELEMETRY": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("CURATION_AUTOMATION", None)  # sensor and schedule stay stopped: the test launches the work
    log = (root / "dagster_dev.log").open("wb")
    dagster = Path(sys.executable).with_name("dagster")
    proc = subprocess.Popen([str(dagster), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
                            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    marker = f"DAGSTER_HOME={home}".encode()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 150
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"dagster dev exited with {proc.returncode}; see {root / 'dagster_dev.log'}")
            try:
                with urllib.request.urlopen(f"{base}/server_info", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"dagster dev did not answer on {base} in 150 s")
            time.sleep(1)
        yield {"base": base, "instance": instance, "warehouse": warehouse, "shots": Screens(shots), "root": root}
    finally:
        _stop_group(proc, marker)
        log.close()
        instance.dispose()
        left = _processes_with_env(marker)
        assert not left, f"processes left behind by dagster dev: {left}"


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    playwright = sync_playwright().start()
    context = None
    try:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True,
            viewport={"width": 1280, "height": 800})
        context.set_default_timeout(60_000)
        context.add_init_script(SKIP_COMMUNITY_POPUP)
        yield context.new_page()
    finally:
        if context is not None:
            context.close()
        playwright.stop()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def shots(server, page, request):
    """The screenshot helper; on a failure, also a screenshot and the HTML of the page as it was."""
    failed_before = request.session.testsfailed
    yield server["shots"]
    if request.session.testsfailed > failed_before:
        name = f"failed-{request.node.name}"
        server["shots"].save(page, name)
        (server["shots"].folder / f"{name}.html").write_text(page.content())


def _open_launch_dialog(page, base: str, path: str = JOB_PATH):
    page.goto(base + path)
    page.get_by_role("button", name="Materialize all").first.click()
    # selection_cut (the keep_fraction step, not partitioned) has never run on a fresh instance
    confirm = page.locator(".dagster-dialog").filter(has_text="Are you sure?").get_by_role("button", name="Confirm")
    dialog = page.locator(".dagster-dialog").filter(has_text="Partition selection")
    confirm.or_(dialog.get_by_text("Partition selection")).first.wait_for()
    if confirm.is_visible():
        confirm.click()
    dialog.get_by_text("Partition selection").wait_for()
    return dialog


def _wait_for_run(instance, partition: str, timeout: float = 240.0):
    import dagster as dg

    finished = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = instance.get_runs(dg.RunsFilter(job_name="curate_shards", tags={"dagster/partition": partition}))
        if runs and runs[0].status in finished:
            return runs[0]
        time.sleep(2)
    raise AssertionError(f"no finished run for {partition} after {timeout:.0f} s")


def _metadata_row(page, label: str):
    return page.locator("tr").filter(has=page.get_by_text(label, exact=True)).first


def test_graph_materialize_partition_and_read_metadata(server, page, shots):
    base, instance = server["base"], server["instance"]

    # asset graph grouped by stage, every group expanded
    page.goto(base + "/asset-groups")
    for group in GROUPS:
        page.get_by_text(group, exact=True).first.wait_for()
    page.set_viewport_size({"width": 1280, "height": 520})  # the pipeline is wide and flat
    page.keyboard.press("Alt+e")  # "Expand all groups"
    page.get_by_text("rewritten_captions").first.wait_for()
    page.locator("button:has([aria-label='panel_show_right'])").last.click()  # hide the group tree
    page.wait_for_timeout(1500)
    shots.save(page, "asset-graph", docs=True)
    page.set_viewport_size({"width": 1280, "height": 800})

    # sensor and schedule are there (stopped)
    page.goto(base + "/automation")
    page.get_by_text("new_shards_sensor").first.wait_for()
    page.get_by_text("fill_missing_shards").first.wait_for()
    shots.save(page, "automation")

    # materialize one partition through the launch dialog
    dialog = _open_launch_dialog(page, base)
    dialog.get_by_text("Select a partition or create one").click()
    page.keyboard.type(SHARDS[0])
    page.locator(".dagster-popover label").filter(has_text=SHARDS[0]).first.click()
    dialog.get_by_text("Launch runs to materialize").click()  # closes the partition picker
    launch = dialog.get_by_role("button", name="Launch 1 run")
    shots.save(page, "launch-partition", docs=True)
    launch.click()
    page.get_by_text(re.compile(r"Launched run [0-9a-f]{8}")).wait_for()
    run = _wait_for_run(instance, SHARDS[0])
    page.goto(f"{base}/runs/{run.run_id}")
    page.get_by_text("curated_shards").first.wait_for()
    shots.save(page, "run")
    assert run.status.value == "SUCCESS", f"run {run.run_id} ended {run.status.value}; see {server['root']}"

    # the lineage table of rewritten_captions for that partition
    import pandas as pd

    lineage = pd.read_parquet(server["warehouse"] / "rewritten_captions" / f"{SHARDS[0]}.parquet")
    accepted = lineage[lineage["accepted"].astype(bool)]
    assert len(accepted), "sample-000000 has accepted rewrites"
    plain = accepted[~accepted["original_caption"].str.contains("&", regex=False)]
    pair = (plain if len(plain) else accepted).iloc[0]
    page.goto(f"{base}/assets/rewritten_captions?view=partitions&partition={SHARDS[0]}")
    table = _metadata_row(page, "lineage").locator("table")
    table.wait_for()
    cells = [" ".join(t.split()) for t in table.locator("td").all_inner_texts()]
    assert " ".join(pair["original_caption"].split()) in cells
    assert " ".join(pair["candidate_caption"].split()) in cells
    assert "attempts" in page.locator("body").inner_text()
    _metadata_row(page, "acceptance_rate").locator("td").first.evaluate(
        "el => el.scrollIntoView({block: 'start', inline: 'start'})")
    shots.save(page, "lineage-table", docs=True)

    # the caption-length histogram (Markdown metadata, a data-URI PNG) renders as a picture
    page.goto(f"{base}/assets/final_captions?view=partitions&partition={SHARDS[0]}")
    _metadata_row(page, "caption_length_histogram").get_by_text("[Show Markdown]").click()
    image = page.locator(".dagster-dialog img[alt='caption length']")
    image.wait_for()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    assert image.evaluate("img => img.naturalWidth") > 100
    assert image.get_attribute("src").startswith("data:image/png;base64,")
    shots.save(page, "caption-length-histogram", docs=True)
    page.locator(".dagster-dialog").get_by_role("button", name="Close").click()

    # the blocking checks on final_captions, with their numbers
    page.goto(f"{base}/assets/final_captions?view=checks")
    page.get_by_text("caption_length_drift").first.wait_for()
    page.get_by_text("final_captions_complete").first.wait_for()
    page.get_by_text("drift_mean_ratio").first.wait_for()
    page.get_by_text("This is a blocking asset check.").first.wait_for()
    assert page.get_by_text("Succeeded").count() >= 2
    shots.save(page, "checks", docs=True)


def test_backfill_all_shards_from_the_ui(server, page, shots):
    from dagster._core.execution.backfill import BulkActionStatus

    base, instance = server["base"], server["instance"]
    before = {b.backfill_id for b in instance.get_backfills()}
    dialog = _open_launch_dialog(page, base)
    dialog.get_by_role("button", name="All", exact=True).click()
    dialog.get_by_text(f"{len(SHARDS)} partitions").wait_for()
    shots.save(page, "launch-backfill")
    dialog.get_by_role("button", name="Launch backfill").click()
    toast = page.get_by_text(re.compile(r"Created backfill [a-z0-9]+"))
    toast.wait_for()
    backfill_id = toast.inner_text().split()[-1]
    created = [b for b in instance.get_backfills() if b.backfill_id not in before]
    assert [b.backfill_id for b in created] == [backfill_id]
    assert sorted(created[0].partition_names) == SHARDS

    # cancel it from the backfill page: the point is that it launches, not another 2 runs
    page.goto(f"{base}/runs/b/{backfill_id}")
    page.get_by_text("Partition selection").wait_for()
    shots.save(page, "backfill")
    page.locator("button:has([aria-label='expand_more'])").last.click()
    page.get_by_role("menuitem", name="Cancel backfill").click()
    page.locator(".dagster-dialog").get_by_role("button", name="Cancel backfill").click()
    deadline = time.monotonic() + 30
    status = None
    while time.monotonic() < deadline:
        status = instance.get_backfill(backfill_id).status
        if status in (BulkActionStatus.CANCELING, BulkActionStatus.CANCELED):
            break
        time.sleep(1)
    assert status in (BulkActionStatus.CANCELING, BulkActionStatus.CANCELED), status
