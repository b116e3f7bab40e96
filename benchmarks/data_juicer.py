"""The ``text`` profile's whole ``curate run`` against Data-Juicer's whole 4-op text run, wall clock.

The same pairs (the first ``--pairs`` Flickr photos with their first caption) go to both: one
webdataset shard for ``curate run --profile text --no-report``, a JSONL file (``text``, ``images``)
for ``dj-process`` with ``clean_html_mapper``, ``whitespace_normalization_mapper``,
``text_length_filter`` and ``alphanumeric_filter`` at ``np: 2``. Data-Juicer is not a dependency:
install it in its own virtualenv (``python -m venv /opt/dj && /opt/dj/bin/pip install
py-data-juicer==1.6.1 aiohttp``, then ``/opt/dj/bin/python -m compileall -q /opt/dj/lib``: with
PYTHONDONTWRITEBYTECODE set nothing is byte-compiled, and every run would compile its imports again)
and pass ``--dj /opt/dj/bin/dj-process``.

Each round runs, one after the other: Data-Juicer; a ``curate run`` served by the warm start
(``curation_pipeline.forkserver``, started by a warm-up run); a ``curate run`` in its own process
(``CURATE_FORKSERVER=off``). Both ``curate`` runs find the home's Great Expectations helper warm.
RESULT: each run's seconds, and Data-Juicer's time over each ``curate`` run's, per round and median.
With ``--smoke`` (8 pairs, 1 round) Data-Juicer runs only if ``--dj`` names one.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from _common import add_smoke_flag, compile_package, image_rows, parse_args, result_line

CURATE = Path(sys.executable).with_name("curate")
OPS = """process:
  - clean_html_mapper:
  - whitespace_normalization_mapper:
  - text_length_filter:
      min_len: 10
      max_len: 10000
  - alphanumeric_filter:
      min_ratio: 0.25
      max_ratio: 1.0
"""


def write_inputs(folder: Path, pairs: int, smoke: bool) -> tuple[Path, Path]:
    """The shard for ``curate`` and the JSONL + config for Data-Juicer, from the same pairs."""
    raw = folder / "raw"
    raw.mkdir()
    rows = image_rows(pairs, smoke)
    with tarfile.open(raw / "flickr-000000.tar", "w") as tar:
        for i, (image, caption) in enumerate(rows):
            for ext, data in (("jpg", image.read_bytes()), ("txt", caption.encode())):
                info = tarfile.TarInfo(f"{i:09d}.{ext}")
                info.size, info.mtime = len(data), 0
                tar.addfile(info, io.BytesIO(data))
    with open(folder / "pairs.jsonl", "w", encoding="utf-8") as handle:
        for image, caption in rows:
            handle.write(json.dumps({"text": caption, "images": [str(image)]}) + "\n")
    config = folder / "dj.yaml"
    config.write_text(f"project_name: bench\ndataset_path: {folder / 'pairs.jsonl'}\n"
                      f"export_path: {folder / 'dj-out' / 'result.jsonl'}\nnp: 2\nopen_tracer: false\n"
                      f"use_cache: false\n{OPS}")
    return raw, config


def timed_process(command: list[str], env: dict, cwd: Path) -> float:
    began = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=1800)
    seconds = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"{command[0]} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dj", default=os.environ.get("DJ_PROCESS", ""), help="path of Data-Juicer's dj-process")
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    add_smoke_flag(parser, pairs=8, rounds=1)
    args = parse_args(parser)
    if not args.dj and not args.smoke:
        raise SystemExit("name Data-Juicer's dj-process with --dj (or DJ_PROCESS); see --help")
    compile_package()
    from curation_pipeline import forkserver, helper

    tmp = Path(tempfile.mkdtemp(prefix="bench-dj-"))
    home = tmp / "home"
    try:
        raw, config = write_inputs(tmp, args.pairs, args.smoke)
        env = {**os.environ, "DAGSTER_HOME": str(home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "GX_ANALYTICS_ENABLED": "false", "TOKENIZERS_PARALLELISM": "false", forkserver.MODE_ENV: "on"}
        dj_env = {**env, "HOME": str(tmp / "dj-home")}  # its caches, not the user's

        def curate(served: bool) -> float:
            shutil.rmtree(tmp / "wh", ignore_errors=True)
            base = [str(CURATE)] if CURATE.is_file() else [sys.executable, "-m", "curation_pipeline.cli"]
            return timed_process([*base, "run", "--raw", str(raw), "--warehouse", str(tmp / "wh"), "--profile",
                                  "text", "--no-report"], {**env, forkserver.MODE_ENV: "on" if served else "off"}, tmp)

        def data_juicer() -> float | None:
            if not args.dj:
                return None
            shutil.rmtree(tmp / "dj-out", ignore_errors=True)
            return timed_process([args.dj, "--config", str(config)], dj_env, tmp)

        curate(served=True)  # warm-up: creates the home, starts the GX helper and, as it exits, the server
        data_juicer()  # warm-up: Data-Juicer's caches and the page cache
        if not forkserver.wait_ready(home):
            raise SystemExit(f"the warm start did not come up: {forkserver.failures() or 'no failure recorded'}")
        rounds = []
        for _ in range(args.rounds):
            dj_s = data_juicer()
            rounds.append({"dj_s": None if dj_s is None else round(dj_s, 3), "served_s": round(curate(served=True), 3),
                           "local_s": round(curate(served=False), 3)})
        os.environ["DAGSTER_HOME"] = str(home)
        helper.stop(home)
        forkserver.stop(home)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    figures: dict = {"pairs": args.pairs, "rounds": rounds}
    for mode in ("served", "local"):
        figures[f"{mode}_median_s"] = statistics.median(r[f"{mode}_s"] for r in rounds)
        if args.dj:
            ratios = [r["dj_s"] / r[f"{mode}_s"] for r in rounds]
            figures[f"{mode}_vs_dj"] = [round(x, 2) for x in ratios]
            figures[f"{mode}_vs_dj_median"] = statistics.median(ratios)
    if args.dj:
        figures["dj_median_s"] = statistics.median(r["dj_s"] for r in rounds)
    for r in rounds:
        print(" ".join(f"{k} {v:.2f}" for k, v in r.items() if v is not None))
    result_line(figures)


if __name__ == "__main__":
    main()
