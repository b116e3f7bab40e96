"""The Dagster UI end to end: `dagster dev` on 127.0.0.1 driven by Debian's headless Chromium.

One `dagster dev` (temp DAGSTER_HOME, warehouse and raw folder with two sample shards, no partition
registered yet) serves all tests, which run in order as a first-time user would:

1. the Lineage page, then the `register_shards` job from its launchpad: the two shards become partitions;
2. a backfill of every shard, launched from the Lineage page (the six shard assets, *All* partitions,
   *Launch backfill*), waited for until it succeeds;
3. the rewrite lineage table of a partition, with the reason each caption was attempted
   (`attempted_because`), and the caption-length histogram;
4. a partition added in the launch dialog whose raw file does not exist: its run fails, and the run
   page names the missing file and the shards that do exist;
5. the partitioned checks: each check's *Partitions* tab shows a status per shard, so the failed
   shard does not paint the others;
6. *Observe* on `raw_shards` (the file SHA-256 becomes each shard's data version).

Screenshots go to pytest's tmp dir and, when ``UI_SCREENSHOTS_DIR`` is set, also (small,
viewport-sized) into that folder (docs/screenshots for the README and docs/ui-tour.md).

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
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from curation_pipeline_tests.processes import processes_with_env
from curation_pipeline_tests.conftest import RAW_SAMPLES, REPO_ROOT, require

CHROMIUM = Path("/usr/bin/chromium")
SHARDS = ["sample-000000", "sample-000001"]
MISSING = "missing-000009"  # a partition whose raw file does not exist
GROUPS = ["ingest", "scoring", "decisions", "rewriting", "curation", "reporting", "evaluation"]
# the partitioned assets a shard's run materializes (curate_shards also observes raw_shards first)
SHARD_ASSETS = ["pairs", "quality_scores", "caption_decisions", "rewritten_captions", "final_captions", "curated_shards"]
LOCATION = "/locations/curation_pipeline"  # workspace.yaml names the location
JOB_PATH = f"{LOCATION}/jobs/curate_shards"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# the community pop-up Dagster shows on a first visit; marking it seen keeps it off the screenshots
SKIP_COMMUNITY_POPUP = "window.localStorage.setItem('communityNux', '\"1\"')"
# the default executor starts a process per step (~25 s of imports each on 2 cores); one process is enough
DOCS_PNG_LIMIT = 250_000

pytestmark = pytest.mark.browser


@pytest.fixture(autouse=True)
def _chromium():
    require(CHROMIUM.exists(), "needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium)",
            ".ci/run installs Debian's chromium")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop_group(proc: subprocess.Popen, marker: bytes, timeout: float = 10.0) -> None:
    """SIGTERM the whole process group, SIGKILL what is left after ``timeout``."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        for pid in processes_with_env(marker):  # anything that left the group (none expected)
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if proc.poll() is not None and not processes_with_env(marker):
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
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")  # the settings `make ui` gives a user
    for shard in SHARDS:
        shutil.copy(RAW_SAMPLES / f"{shard}.tar", raw / f"{shard}.tar")
    instance = dg.DagsterInstance.from_config(str(home))  # no partition yet: the first test registers them

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
        yield {"base": base, "instance": instance, "warehouse": warehouse, "raw": raw, "shots": Screens(shots),
               "root": root}
    finally:
        _stop_group(proc, marker)
        log.close()
        instance.dispose()
        left = processes_with_env(marker)
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


def _confirm_then(page, target):
    """Click through "Are you sure?" confirmations (upstream assets never materialized, such as
    selection_cut or the never-observed raw_shards) until ``target`` shows; there may be none."""
    confirm = page.locator(".dagster-dialog").filter(has_text="Are you sure?").get_by_role("button", name="Confirm")
    for _ in range(5):
        confirm.or_(target).first.wait_for()
        if not confirm.is_visible():
            break
        confirm.click()
        confirm.wait_for(state="hidden")
    target.wait_for()


def _launch_dialog(page):
    dialog = page.locator(".dagster-dialog").filter(has_text="Partition selection")
    _confirm_then(page, dialog.get_by_text("Partition selection"))
    return dialog


def _until(action, done, tries: int = 6, wait_ms: int = 10_000) -> None:
    """Do ``action`` until the locator ``done`` shows. The launch dialog resets its partition
    selection when its partition data arrive late (a loaded machine), undoing an early click."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for _ in range(tries - 1):
        action()
        try:
            done.wait_for(timeout=wait_ms)
            return
        except PlaywrightTimeout:
            continue
    action()
    done.wait_for()


def _close(page, dialog, tries: int = 5) -> None:
    """Cancel a dialog. A click that lands while the dialog re-renders (its partition list reloading
    on a loaded machine) is lost: click again until it is gone."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for _ in range(tries - 1):
        try:
            dialog.get_by_role("button", name="Cancel").click(timeout=5_000)
        except PlaywrightTimeout:  # gone already, or covered: Escape closes it too
            page.keyboard.press("Escape")
        try:
            dialog.wait_for(state="hidden", timeout=10_000)
            return
        except PlaywrightTimeout:
            continue
    page.keyboard.press("Escape")
    dialog.wait_for(state="hidden")


def _pick_partition(page, dialog, key: str) -> None:
    def pick():
        dialog.get_by_text("Select a partition or create one").click()
        page.keyboard.type(key)
        page.locator(".dagster-popover label").filter(has_text=key).first.click()
        dialog.get_by_text("Launch runs to materialize").click()  # closes the partition picker

    _until(pick, dialog.get_by_role("button", name="Launch 1 run"))


def _open_launch_dialog(page, base: str, path: str = JOB_PATH):
    page.goto(base + path)
    page.get_by_role("button", name=re.compile(r"Materialize all")).first.click()
    return _launch_dialog(page)


def _wait_for_run(instance, timeout: float = 300.0, **filters):
    """The newest run matching ``filters`` (a RunsFilter's fields) once it has finished."""
    import dagster as dg

    finished = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = instance.get_runs(dg.RunsFilter(**filters), limit=1)
        if runs and runs[0].status in finished:
            return runs[0]
        time.sleep(2)
    raise AssertionError(f"no finished run for {filters} after {timeout:.0f} s")


def _metadata_row(page, label: str):
    return page.locator("tr").filter(has=page.get_by_text(label, exact=True)).first


def _table_cells(table) -> tuple[list[str], list[list[str]]]:
    """A rendered table's header and rows, whitespace collapsed."""
    return table.evaluate("""t => {
        const clean = s => s.split(/\\s+/).filter(Boolean).join(' ');
        const head = [...t.querySelectorAll('thead th, thead td')].map(c => clean(c.innerText));
        const rows = [...t.querySelectorAll('tbody tr')].map(r => [...r.querySelectorAll('td')].map(c => clean(c.innerText)));
        return [head, rows];
    }""")


def _clean(text: str) -> str:
    return " ".join(str(text).split())


def test_first_run_registers_the_shards(server, page, shots):
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

    # sensors and schedules are there (stopped)
    page.goto(base + "/automation")
    for name in ("new_shards_sensor", "fill_missing_shards", "observe_raw_shards_nightly"):
        page.get_by_text(name).first.wait_for()
    shots.save(page, "automation")

    # a fresh instance knows no shard: the register_shards job adds one partition per raw file
    assert instance.get_dynamic_partitions("shards") == []
    page.goto(f"{base}{LOCATION}/jobs/register_shards/playground")
    page.get_by_role("button", name="Launch Run").click()
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}"))
    run = _wait_for_run(instance, job_name="register_shards")
    assert run.status.value == "SUCCESS", f"register_shards ended {run.status.value}; see {server['root']}"
    page.get_by_text("registered 2 new shard(s)").first.wait_for()
    shots.save(page, "register-shards", docs=True)
    assert sorted(instance.get_dynamic_partitions("shards")) == SHARDS


def test_backfill_all_shards_from_the_lineage_page(server, page, shots):
    base, instance = server["base"], server["instance"]
    before = {b.backfill_id for b in instance.get_backfills()}
    # Lineage, filtered to the shard assets (what typing the query into "Search and filter assets" does)
    query = " or ".join(f"key:{name}" for name in SHARD_ASSETS)
    page.goto(f"{base}/asset-groups~{urllib.parse.quote(query, safe='')}/")
    page.get_by_text("curated_shards").first.wait_for()
    page.get_by_role("button", name=re.compile(r"Materialize all")).first.click()
    dialog = _launch_dialog(page)
    _until(dialog.get_by_role("button", name="All", exact=True).click,
           dialog.get_by_text(f"{len(SHARDS)} partitions").first)
    shots.save(page, "launch-backfill", docs=True)
    dialog.get_by_role("button", name="Launch backfill").click()
    toast = page.get_by_text(re.compile(r"Created backfill [a-z0-9]+"))
    toast.wait_for()
    backfill_id = toast.inner_text().split()[-1]
    created = [b for b in instance.get_backfills() if b.backfill_id not in before]
    assert [b.backfill_id for b in created] == [backfill_id]
    assert sorted(key.to_user_string() for key in created[0].asset_selection) == sorted(SHARD_ASSETS)
    server["backfill"] = backfill_id  # its two runs go on while the next test launches a third


def test_partition_without_raw_file_fails_clearly(server, page, shots):
    base, instance = server["base"], server["instance"]
    dialog = _open_launch_dialog(page, base)
    dialog.get_by_text("Add a partition").click()
    page.get_by_placeholder("name").fill(MISSING)
    shots.save(page, "add-partition")
    page.get_by_role("button", name="Save").click()
    page.get_by_placeholder("name").wait_for(state="hidden")
    # The dialog selects the new partition, but may drop it again while it reloads the partition
    # list (seen with Dagster 1.13): close it and pick the partition in a fresh one instead.
    _close(page, dialog)
    assert MISSING in instance.get_dynamic_partitions("shards")
    dialog = _open_launch_dialog(page, base)
    _pick_partition(page, dialog, MISSING)
    dialog.get_by_role("button", name="Launch 1 run").click()
    page.get_by_text(re.compile(r"Launched run [0-9a-f]{8}")).wait_for()
    run = _wait_for_run(instance, job_name="curate_shards", tags={"dagster/partition": MISSING})
    assert run.status.value == "FAILURE", f"run {run.run_id} for {MISSING} ended {run.status.value}"

    page.goto(f"{base}/runs/{run.run_id}")
    message = page.get_by_text(re.compile(r"raw shard file \S+ does not exist; shards in")).first
    message.wait_for()
    text = _clean(message.inner_text())
    assert f"{MISSING}.tar does not exist" in text, text
    assert f"{server['raw']}: {', '.join(SHARDS)}" in text, text
    message.scroll_into_view_if_needed()
    shots.save(page, "missing-shard", docs=True)


def test_backfill_completes(server, page, shots):
    import dagster as dg
    from dagster._core.execution.backfill import BulkActionStatus

    base, instance, backfill_id = server["base"], server["instance"], server.get("backfill")
    assert backfill_id, "no backfill was launched"
    # the backfill page: one run per shard, in parallel; the backfill daemon marks it done
    page.goto(f"{base}/runs/b/{backfill_id}")
    page.get_by_text("Partition selection").first.wait_for()
    done = {BulkActionStatus.COMPLETED, BulkActionStatus.COMPLETED_SUCCESS, BulkActionStatus.COMPLETED_FAILED,
            BulkActionStatus.FAILED, BulkActionStatus.CANCELED}
    deadline = time.monotonic() + 480
    while (status := instance.get_backfill(backfill_id).status) not in done and time.monotonic() < deadline:
        time.sleep(3)
    runs = instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
    outcome = {r.tags.get("dagster/partition"): r.status.value for r in runs}
    assert status in (BulkActionStatus.COMPLETED, BulkActionStatus.COMPLETED_SUCCESS), \
        f"backfill {backfill_id} is {status.value}; runs {outcome}; see {server['root']}"
    assert sorted(outcome) == SHARDS and set(outcome.values()) == {"SUCCESS"}, outcome
    page.reload()
    page.get_by_text("Succeeded").first.wait_for()
    shots.save(page, "backfill", docs=True)


def test_lineage_table_says_why_each_caption_was_attempted(server, page, shots):
    import pandas as pd

    base, warehouse, shard = server["base"], server["warehouse"], SHARDS[0]
    lineage = pd.read_parquet(warehouse / "rewritten_captions" / f"{shard}.parquet")
    decisions = pd.read_parquet(warehouse / "caption_decisions" / f"{shard}.parquet")
    why = dict(zip(decisions["key"], decisions["reason"]))
    accepted = lineage[lineage["accepted"].astype(bool)]
    assert len(accepted), f"{shard} has accepted rewrites"
    plain = accepted[~accepted["original_caption"].str.contains("&", regex=False)]
    pair = (plain if len(plain) else accepted).iloc[0]

    page.goto(f"{base}/assets/rewritten_captions?view=partitions&partition={shard}")
    table = _metadata_row(page, "lineage").locator("table")
    table.wait_for()
    head, rows = _table_cells(table)
    assert "attempted_because" in head, head
    row = next((r for r in rows if _clean(pair["original_caption"]) in r), None)
    assert row is not None, f"{pair['key']} not in the lineage table: {rows[:3]}"
    assert _clean(pair["candidate_caption"]) in row
    assert row[head.index("attempted_because")] == _clean(why[pair["key"]]), (head, row)
    page.get_by_text("attempted_because", exact=True).first.wait_for()
    assert "attempts" in page.locator("body").inner_text()
    page.set_viewport_size({"width": 1600, "height": 800})  # the table is wide
    table.locator("th").filter(has_text="original_caption").first.evaluate(
        "el => el.scrollIntoView({block: 'start', inline: 'start'})")
    shots.save(page, "lineage-table", docs=True)
    page.set_viewport_size({"width": 1280, "height": 800})

    # the caption-length histogram (Markdown metadata, a data-URI PNG) renders as a picture
    page.goto(f"{base}/assets/final_captions?view=partitions&partition={shard}")
    _metadata_row(page, "caption_length_histogram").get_by_text("[Show Markdown]").click()
    image = page.locator(".dagster-dialog img[alt='caption length']")
    image.wait_for()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    assert image.evaluate("img => img.naturalWidth") > 100
    assert image.get_attribute("src").startswith("data:image/png;base64,")
    shots.save(page, "caption-length-histogram", docs=True)
    page.locator(".dagster-dialog").get_by_role("button", name="Close").click()


def test_checks_are_per_partition(server, page, shots):
    base = server["base"]

    # every check is partitioned like its asset: the Partitions tab has one status per shard
    page.goto(f"{base}/assets/pairs?view=checks&checkDetail=pairs_schema")
    page.get_by_role("tab", name="Execution history").wait_for()
    page.get_by_role("tab", name="Partitions").last.click()  # the check's tab, not the asset's
    page.get_by_text(f"{len(SHARDS) + 1} Partitions Selected").wait_for()
    # the missing shard's check never ran (pairs failed first): that shard alone is "Execution Failed"
    page.get_by_text(f"Passed ({len(SHARDS)})", exact=True).wait_for()
    page.get_by_text("Execution Failed (1)", exact=True).wait_for()
    for status in ("Failed", "Missing", "Skipped", "In Progress"):
        page.get_by_text(f"{status} (0)", exact=True).wait_for()
    page.get_by_text(MISSING, exact=True).filter(visible=True).last.click()  # in the list (the first is a chip)
    page.get_by_text("Execution failed").first.wait_for()
    page.wait_for_timeout(1000)
    shots.save(page, "check-partitions", docs=True)

    # the blocking checks on final_captions, with their numbers
    page.goto(f"{base}/assets/final_captions?view=checks&checkDetail=caption_length_drift")
    page.get_by_text("final_captions_complete").first.wait_for()
    page.get_by_text("This is a blocking asset check.").first.wait_for()
    page.get_by_role("tab", name="Partitions").last.click()
    page.get_by_text(f"Passed ({len(SHARDS)})").wait_for()
    page.set_viewport_size({"width": 1440, "height": 800})
    page.get_by_text(SHARDS[0], exact=True).filter(visible=True).last.click()
    page.get_by_text("drift_mean_ratio").first.wait_for()
    page.wait_for_timeout(1000)
    shots.save(page, "checks", docs=True)
    page.set_viewport_size({"width": 1280, "height": 800})


def test_observe_raw_shards(server, page, shots):
    import hashlib

    import dagster as dg

    base, instance = server["base"], server["instance"]
    before = {r.run_id for r in instance.get_runs()}
    page.goto(f"{base}/assets/raw_shards")
    page.get_by_role("button", name=re.compile(r"Observe")).first.click()
    page.get_by_text(re.compile(r"Launched run [0-9a-f]{8}")).wait_for()
    deadline = time.monotonic() + 300
    new = []
    while time.monotonic() < deadline:
        new = [r for r in instance.get_runs() if r.run_id not in before]
        if new and new[0].is_finished:
            break
        time.sleep(2)
    assert new and new[0].status.value == "SUCCESS", f"observation run: {new}; see {server['root']}"

    # each shard's data version is its file's SHA-256; the missing shard gets none
    observed = {}
    for record in instance.fetch_observations(dg.AssetKey("raw_shards"), limit=20).records:
        observed.setdefault(record.partition_key, record.asset_observation.tags.get("dagster/data_version"))
    expected = {shard: hashlib.sha256((server["raw"] / f"{shard}.tar").read_bytes()).hexdigest() for shard in SHARDS}
    assert observed == expected, observed

    # the asset's Events tab: one observation per shard, its data version under "Show tags"
    page.goto(f"{base}/assets/raw_shards?view=events")
    page.get_by_text(re.compile(r"Partition sample-00000\d observed in run")).first.wait_for()
    shown = page.get_by_text(re.compile(r"Partition sample-00000\d observed")).first.inner_text()
    page.get_by_text(re.compile(r"Show tags \(1\)")).first.click()
    page.get_by_text(expected[re.search(r"sample-00000\d", shown).group(0)]).first.wait_for()
    shots.save(page, "observe", docs=True)
    # a shard asset's page: owner team:curation (shown as "curation"), its stage tag, its jobs
    page.goto(f"{base}/assets/pairs")
    page.get_by_text("Owners", exact=True).first.wait_for()
    page.get_by_text("stage: ingest").first.wait_for()
    page.get_by_text("curate_shards").first.wait_for()
    shots.save(page, "pairs-overview")
