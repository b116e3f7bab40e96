"""``curate``: the demo run, runs over a folder of shards, lineage look-ups and the report.

Exit codes: 0 success; 1 a run or check failed; 2 bad input (no shards found, an
invalid shard name, an unknown key, a model that cannot be loaded).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


class BadInput(click.ClickException):
    exit_code = EXIT_BAD_INPUT


INSTANCE_YAML = Path(__file__).resolve().parents[1] / "dagster.yaml"


def _dagster_home() -> Path:
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(Path.cwd() / "data" / "dagster_home")))
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():  # the shipped instance settings (run retries on, telemetry off), never overwritten
        text = INSTANCE_YAML.read_text() if INSTANCE_YAML.is_file() else ""
        tmp = config.with_name(f".dagster.yaml.{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, config)
    return home


def _quiet() -> dict:
    return {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _materialize(defs, instance, selected: list[str], report: bool) -> list[str]:
    """Run each shard's job, then the report; returns what failed."""
    from tqdm import tqdm

    instance.add_dynamic_partitions("shards", [s for s in selected if not instance.has_dynamic_partition("shards", s)])
    job = defs.resolve_job_def("curate_shards")
    failed = []
    for shard in tqdm(selected, desc="shards", unit="shard"):
        result = job.execute_in_process(partition_key=shard, instance=instance, raise_on_error=False,
                                        run_config=_quiet())
        checks = [c for c in result.get_asset_check_evaluations() if not c.passed]
        for c in checks:
            click.echo(f"  {shard}: check {c.check_name} failed: {c.description}", err=True)
        if not result.success:
            failed.append(shard)
            errors = [e.message for e in result.all_events if e.is_failure and e.message]
            if errors and not checks:
                click.echo(f"  {shard}: {errors[-1]}", err=True)
    if report and len(failed) < len(selected):
        result = defs.resolve_job_def("quality_report_job").execute_in_process(
            instance=instance, raise_on_error=False, run_config=_quiet())
        if not result.success:
            failed.append("quality_report")
    return failed


def run_shards(raw: str, warehouse: str, shards: tuple[str, ...], profile: str, rewriter: str,
               rewriter_model: str, clip_model: str, mlm_model: str, report: bool) -> int:
    """Register the shards as partitions, materialize each, then the report; returns an exit code."""
    import dagster as dg

    from curation_pipeline.definitions import build_definitions
    from curation_pipeline.models.loading import ModelUnavailableError
    from curation_pipeline.resources import RewriterResource, ScoringResource, WarehouseResource

    found, rejected = WarehouseResource(raw_root=raw, root=warehouse).list_raw()
    for message in rejected:
        click.echo(f"skipped: {message}", err=True)
    selected = list(shards) or sorted(found)
    unknown = [s for s in selected if s not in found]
    if unknown:
        raise BadInput(f"no raw shard {', '.join(unknown)} in {raw} (found: {', '.join(sorted(found)) or 'none'})")
    if not selected:
        raise BadInput(f"no .tar shards found in {raw}; generate samples with `curate sample-data` or point --raw elsewhere")
    scoring = ScoringResource(profile=profile, clip_model=clip_model, mlm_model=mlm_model)
    rewriting = RewriterResource(kind=rewriter, model=rewriter_model)
    try:  # load models here, once: a model that cannot be loaded is bad input, not a failed run
        scoring.scorers()
        rewriting.rewriter()
    except (ValueError, ModelUnavailableError) as exc:
        raise BadInput(str(exc)) from exc
    defs = build_definitions(raw_root=raw, warehouse_root=warehouse, scoring=scoring, rewriter=rewriting)
    _dagster_home()
    with dg.DagsterInstance.get() as instance:  # also makes it the definitions' state storage
        failed = _materialize(defs, instance, selected, report)
    from curation_pipeline.storage.warehouse import Warehouse

    wh = Warehouse(warehouse)
    click.echo("")
    click.echo(f"curated shards: {wh.local_path(wh.curated_dir)}/")
    click.echo(f"quality report: {wh.local_path(wh.report_db_path)}  (curate report --warehouse {warehouse})")
    click.echo(f"lineage:        curate lineage --warehouse {warehouse} --shard {selected[0]}")
    click.echo(f"web UI:         make ui   (= DAGSTER_HOME={os.environ['DAGSTER_HOME']} dagster dev -w workspace.yaml "
               "-h 127.0.0.1 -p 3000), then open http://127.0.0.1:3000")
    if failed:
        click.echo(f"FAILED: {', '.join(failed)}", err=True)
        return EXIT_FAILED
    click.echo(f"done: {len(selected)} shards curated")
    return 0


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Curate image-text pairs from webdataset shards: score, rewrite weak captions, keep the rest.

    Everything runs through the Dagster definitions in curation_pipeline.definitions, so runs
    started here show up in the web UI (same DAGSTER_HOME, default data/dagster_home).
    """


RAW = click.option("--raw", default="data/raw", show_default=True, help="Folder or URL of raw .tar shards.")
WAREHOUSE = click.option("--warehouse", default="data/warehouse", show_default=True,
                         help="Warehouse root (Parquet tables, curated shards, quality.duckdb).")


@main.command()
@WAREHOUSE
def demo(warehouse: str) -> None:
    """Run every stage on the bundled sample shards (offline profile, rule-based rewriter).

    Example: curate demo
    """
    raw = "data/raw"
    if not any(Path(raw).glob("*.tar")):
        from curation_pipeline.sample_data import generate_sample_shards

        generate_sample_shards(raw)
    sys.exit(run_shards(raw, warehouse, (), "offline", "cleaner", "", "", "", True))


@main.command()
@RAW
@WAREHOUSE
@click.option("--shard", "shards", multiple=True, help="Only these shard keys (repeatable); default all.")
@click.option("--profile", default="offline", show_default=True, help="offline | text | clip | mlm | full")
@click.option("--clip-model", default="", help="CLIP/SigLIP HuggingFace id or local path (clip, full).")
@click.option("--mlm-model", default="", help="Chat VLM id or local path for MLM-Filter metrics (mlm, full).")
@click.option("--rewriter", default="cleaner", show_default=True, help="cleaner | vlm | aitqe")
@click.option("--rewriter-model", default="", help="Model id or local path for the vlm/aitqe rewriter.")
@click.option("--no-report", is_flag=True, help="Skip rebuilding quality.duckdb.")
def run(raw, warehouse, shards, profile, clip_model, mlm_model, rewriter, rewriter_model, no_report) -> None:
    """Curate the shards in --raw into --warehouse, then rebuild the report.

    Example: curate run --raw /data/laion/shards --warehouse /data/curated --profile clip
    --clip-model openai/clip-vit-base-patch32
    """
    try:
        code = run_shards(raw, warehouse, shards, profile, rewriter, rewriter_model, clip_model, mlm_model,
                          not no_report)
    except FileNotFoundError as exc:
        raise BadInput(str(exc)) from exc
    except ValueError as exc:
        raise BadInput(str(exc)) from exc
    sys.exit(code)


@main.command()
@WAREHOUSE
@click.option("--key", default=None, help="Sample key, e.g. 000010023.")
@click.option("--shard", default=None, help="Shard key, e.g. sample-000001.")
@click.option("--rewritten-only", is_flag=True, help="Only pairs whose caption was rewritten.")
@click.option("--limit", default=50, show_default=True, help="Pairs to print.")
def lineage(warehouse, key, shard, rewritten_only, limit) -> None:
    """How captions came to be: decision, every rewrite attempt (rewriter, run, scores), final caption.

    Example: curate lineage --shard sample-000001 --rewritten-only
    """
    from curation_pipeline.lineage import caption_history, format_history
    from curation_pipeline.shards.keys import InvalidShardName
    from curation_pipeline.storage.warehouse import Warehouse

    if key is None and shard is None:
        raise BadInput("give --key and/or --shard")
    try:
        history = caption_history(Warehouse(warehouse), key=key, shard=shard, rewritten_only=rewritten_only)
    except (FileNotFoundError, InvalidShardName) as exc:
        raise BadInput(str(exc)) from exc
    if history.final.empty:
        raise BadInput(f"no pair with key={key!r} shard={shard!r} in {warehouse}")
    click.echo(format_history(history, limit=limit))


@main.command()
@WAREHOUSE
def report(warehouse) -> None:
    """Print the quality report (per shard and overall) from quality.duckdb.

    Example: curate report
    """
    import duckdb

    from curation_pipeline.storage.warehouse import Warehouse

    wh = Warehouse(warehouse)
    path = wh.local_path(wh.report_db_path)
    if not Path(path).exists():
        raise BadInput(f"no report at {path}; run `curate demo` or materialize quality_report")
    con = duckdb.connect(path, read_only=True)
    try:
        for table in ("overall", "shard_summary", "drop_reasons", "rewriter_summary"):
            click.echo(f"\n## {table}\n")
            click.echo(con.execute(f"SELECT * FROM {table}").df().to_string(index=False))
    finally:
        con.close()


@main.command("sample-data")
@click.option("--out", default="data/raw", show_default=True)
@click.option("--shards", default=3, show_default=True)
def sample_data(out, shards) -> None:
    """Regenerate the bundled sample shards (deterministic, byte-identical).

    Example: curate sample-data --out /tmp/raw --shards 5
    """
    from curation_pipeline.sample_data import generate_sample_shards

    for path in generate_sample_shards(out, n_shards=shards):
        click.echo(path)


if __name__ == "__main__":
    main()


@main.command("convert-model")
@click.argument("src")
@click.argument("dst", type=click.Path(file_okay=False))
@click.option("--vision-tower", default=None,
              help="Local directory or id of the vision tower the checkpoint names (mm_vision_tower / "
                   "vision_model_name_or_path); default: the name in its config.")
def convert_model(src, dst, vision_tower) -> None:
    """Write a released MLM-Filter or AITQE checkpoint (SRC: hub id or directory) as a standard
    transformers LLaVA directory DST, which transformers, vLLM and this project load natively."""
    from curation_pipeline.models.released import convert_released

    out = convert_released(src, dst, vision_tower=vision_tower)
    click.echo(f"converted {src} -> {out}")
