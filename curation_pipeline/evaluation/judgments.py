"""Human judgments of image-caption pairs: readers, the join with a warehouse's scores, baselines.

Formats (``read_judgments``), one row per judged pair (``pair``, ``image``, ``caption``, ``score``):

* ``expert``: Flickr8k-Expert ``ExpertAnnotations.txt`` (Hodosh et al. 2013): image file, caption id
  (``<image file>#<0-4>``), three expert scores 1-4; ``score`` is their mean and ``ratings`` keeps all
  three. Caption text comes from ``Flickr8k.token.txt`` (``captions``). As in CLIPScore and SPICE, a
  candidate that is one of its own image's references is left out (``skip_references``).
* ``crowdflower``: Flickr8k-CrowdFlower ``CrowdFlowerAnnotations.txt``: image file, caption id, share
  of "yes" (the score), number of yes, number of no.
* ``generic``: CSV (header row) or JSON lines with ``image``, ``caption`` and ``score``; optional ``key``
  and ``shard`` (join on the warehouse's sample key instead) and ``references`` (a list of reference
  captions, for the reference baseline). A pair may be rated in several rows (one per annotator): ``pair``
  names the pair each row rates, and the bootstrap draws pairs.
"""

from __future__ import annotations

import csv
import io
import json
import numbers
from collections import defaultdict
from pathlib import Path, PurePosixPath
from typing import Iterator

import numpy as np
import pandas as pd

from curation_pipeline.evaluation.keys import require_unambiguous_keys

FORMATS = ("expert", "crowdflower", "generic")
# Where a sample's json may name its source image (the judgment files name image files).
IMAGE_FIELDS = ("image", "image_id", "filename", "file_name", "image_path", "path", "url")


def normalize_caption(text) -> str:
    """Case and whitespace folded, and NUL bytes dropped as ingest drops them (``reader.file_caption``): a judgment
    file's caption holding one still joins the pair the warehouse stored without it."""
    return " ".join(text.replace("\x00", "").split()).lower() if isinstance(text, str) else ""


def image_id(value) -> str:
    """The comparable form of an image reference: the file name without folders or query string."""
    if not isinstance(value, str) or not value.strip():
        return ""
    return PurePosixPath(value.strip().split("?", 1)[0].replace("\\", "/")).name.lower()


def _tab_rows(path) -> Iterator[tuple[int, list[str]]]:
    """(line number, tab-separated fields) of every non-blank line."""
    with open(path, encoding="utf-8-sig") as handle:
        for n, line in enumerate(handle, 1):
            if line.strip():
                yield n, line.rstrip("\n").split("\t")


def read_flickr8k_captions(path: str | Path) -> tuple[dict[str, str], dict[str, list[str]]]:
    """``Flickr8k.token.txt``: (caption id -> caption, image file -> its captions)."""
    by_id: dict[str, str] = {}
    by_image: dict[str, list[str]] = defaultdict(list)
    for n, parts in _tab_rows(path):
        if len(parts) != 2 or "#" not in parts[0]:
            raise ValueError(f"{path}:{n}: expected '<image file>#<n>\\t<caption>' (Flickr8k.token.txt)")
        by_id[parts[0]] = parts[1]
        by_image[parts[0].split("#", 1)[0]].append(parts[1])
    return by_id, dict(by_image)


def sniff_format(path: str | Path) -> str:
    """``expert``, ``crowdflower`` or ``generic``, from the file's name and first line."""
    path = Path(path)
    if path.suffix.lower() in (".csv", ".jsonl", ".json"):
        return "generic"
    with open(path, encoding="utf-8-sig") as handle:
        first = next((line for line in handle if line.strip()), "")
    parts = first.rstrip("\n").split("\t")
    if len(parts) == 5 and "#" in parts[1]:
        try:
            share, yes, no = float(parts[2]), int(parts[3]), int(parts[4])
        except ValueError:
            share, yes, no = -1.0, -1, -1
        if 0.0 <= share <= 1.0 and "." in parts[2] and yes >= 0 and no >= 0:
            return "crowdflower"
        return "expert"
    return "generic"


def _caption_for(caption_id: str, captions: dict[str, str] | None, path, n) -> str:
    if captions is None:
        raise ValueError(f"{path} names captions by id ({caption_id}); pass the Flickr8k.token.txt file as captions")
    try:
        return captions[caption_id]
    except KeyError:
        raise ValueError(f"{path}:{n}: caption id {caption_id!r} is not in the captions file") from None


def read_expert(path, captions: dict[str, str] | None, references: dict[str, list[str]] | None = None,
                skip_references: bool = True) -> pd.DataFrame:
    rows = []
    skipped = 0
    for n, parts in _tab_rows(path):
        if len(parts) != 5:
            raise ValueError(f"{path}:{n}: expected 5 tab-separated columns (image, caption id, 3 expert scores)")
        image, caption_id = parts[0], parts[1]
        try:
            ratings = [float(x) for x in parts[2:]]
        except ValueError:
            raise ValueError(f"{path}:{n}: expert scores must be numbers 1-4, got {parts[2:]}") from None
        caption = _caption_for(caption_id, captions, path, n)
        # by the caption's text, as CLIPScore's flickr8k_example/download.py does (SPICE's protocol): the same
        # words as one of the image's references is left out, whichever image that caption id belongs to
        if skip_references and references is not None and caption in references.get(image, []):
            skipped += 1
            continue
        rows.append({"pair": f"{image}|{caption_id}", "image": image, "caption_id": caption_id,
                     "caption": caption, "score": float(np.mean(ratings)), "ratings": ratings})
    df = pd.DataFrame(rows, columns=["pair", "image", "caption_id", "caption", "score", "ratings"])
    df.attrs["skipped_references"] = skipped
    return df


def read_crowdflower(path, captions: dict[str, str] | None) -> pd.DataFrame:
    rows = []
    for n, parts in _tab_rows(path):
        if len(parts) != 5:
            raise ValueError(f"{path}:{n}: expected 5 tab-separated columns (image, caption id, share of yes, "
                             "yes, no)")
        image, caption_id = parts[0], parts[1]
        try:
            share, yes, no = float(parts[2]), int(parts[3]), int(parts[4])
        except ValueError:
            raise ValueError(f"{path}:{n}: expected a share and two counts, got {parts[2:]}") from None
        rows.append({"pair": f"{image}|{caption_id}", "image": image, "caption_id": caption_id,
                     "caption": _caption_for(caption_id, captions, path, n), "score": share,
                     "n_yes": yes, "n_no": no})
    return pd.DataFrame(rows, columns=["pair", "image", "caption_id", "caption", "score", "n_yes", "n_no"])


def read_generic(path) -> pd.DataFrame:
    path = Path(path)
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".csv":
        records = list(csv.DictReader(io.StringIO(text)))
    else:
        stripped = text.lstrip()
        if stripped.startswith("["):
            records = _json(path, text, None)  # its own line numbers
        else:
            records = [_json(path, line, n) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not records:  # a CSV with its header only reads as no columns: not "missing image, caption and score"
        raise ValueError(f"{path}: no records")
    df = pd.DataFrame(records)
    missing = {"score"} - set(df.columns)
    if not {"key"} <= set(df.columns) and not {"image", "caption"} <= set(df.columns):
        missing |= {"image", "caption"}
    if missing or df.empty:
        raise ValueError(f"{path}: each record needs image, caption and score (or key and score); missing "
                         f"{sorted(missing) or 'records'}")
    raw = df["score"]
    df["score"] = pd.to_numeric(raw, errors="coerce")
    # a value that is no number ("n/a", "3,5") is left out of the correlation, and said so (``evaluate_agreement``)
    unread = raw[~np.isfinite(df["score"].to_numpy(dtype=float)) & raw.notna() & raw.astype(str).str.strip().ne("")]
    df.attrs["unread_scores"] = [str(v) for v in unread.drop_duplicates().head(3)]
    for column in ("image", "caption", "key", "shard"):
        if column not in df:
            df[column] = None
    if "references" in df:
        df["references"] = df["references"].apply(
            lambda v: json.loads(v) if isinstance(v, str) and v.startswith("[") else v)
    df["pair"] = _generic_pairs(df)
    return df


def _json(path: Path, text: str, line: int | None):
    """One JSON value of a judgment file; its error names the file and line (a line is parsed alone)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"{path}:{line}" if line is not None else f"{path}:{exc.lineno}"
        hint = "" if line != 1 else "; a CSV file must be named .csv"
        raise ValueError(f"{where}: not JSON ({exc.msg}): each line must be one JSON object (JSON lines), or the "
                         f"file one JSON list{hint}") from None


def _generic_pairs(df: pd.DataFrame) -> list[str]:
    """Which judged pair each row rates: its (shard, key) where the file names keys, else its image and caption as
    the join compares them. A file of one row per annotator rates a pair several times: the bootstrap then draws
    pairs, not rows, and the report counts pairs (``evaluate_agreement``)."""
    keyed = df["key"].map(_present)
    return [json.dumps(["key", shard if _present(shard) else None, str(key)]) if has_key
            else json.dumps(["image", image_id(image), normalize_caption(caption)])
            for has_key, shard, key, image, caption in zip(keyed, df["shard"], df["key"], df["image"], df["caption"])]


def _present(value) -> bool:
    """A value given: not None, NaN, or an empty cell (a CSV's blank column reads as "")."""
    return value is not None and not (isinstance(value, float) and np.isnan(value)) \
        and not (isinstance(value, str) and not value.strip())


def read_judgments(path, fmt: str = "auto", captions_file=None, skip_references: bool = True) -> pd.DataFrame:
    """Judged pairs from a file in one of ``FORMATS`` (``auto`` sniffs it); ``.attrs`` say which."""
    fmt = sniff_format(path) if fmt == "auto" else fmt
    if fmt not in FORMATS:
        raise ValueError(f"unknown judgment format {fmt!r}; choose auto, {', '.join(FORMATS)}")
    captions = references = None
    if captions_file:
        captions, references = read_flickr8k_captions(captions_file)
    if fmt == "expert":
        df = read_expert(path, captions, references, skip_references)
    elif fmt == "crowdflower":
        df = read_crowdflower(path, captions)
    else:
        df = read_generic(path)
    if references is not None and "references" not in df:
        # the image's other captions: CLIPScore's references exclude the candidate itself
        df["references"] = [[r for r in references.get(img, []) if r != cap]
                            for img, cap in zip(df["image"], df["caption"])]
    df.attrs.update({"format": fmt, "path": str(path)})
    if df.empty:
        raise ValueError(f"{path}: no judged pairs")
    return df


def warehouse_scores(warehouse, column: str) -> pd.DataFrame:
    """Every scored pair of a warehouse with ``column``: shard, key, caption, image (from the sample's
    json when it names one, else the key) and ``metric``."""
    scores = warehouse.read_all("quality_scores")
    if scores.empty:
        raise ValueError(f"no quality_scores in the warehouse at {warehouse.root}; run `curate run` on the judged "
                         "pairs first")
    numeric = sorted(c for c in scores.columns if pd.api.types.is_numeric_dtype(scores[c]))
    if column not in scores:
        raise ValueError(f"score column {column!r} is not in quality_scores; numeric columns: {', '.join(numeric)}")
    if column not in numeric:  # text (datacomp_lang) read as NaN everywhere: "only 0 of N judged pairs" said nothing
        held = scores[column].dropna()
        raise ValueError(f"score column {column!r} of quality_scores is not numeric ("
                         + (f"e.g. {held.iloc[0]!r}" if len(held) else "it holds no value")
                         + f"); numeric columns: {', '.join(numeric)}")
    out = scores[["shard", "key", "caption"]].copy()
    out["metric"] = pd.to_numeric(scores[column], errors="coerce").to_numpy()
    pairs = warehouse.read_all("pairs")
    images = {}
    if not pairs.empty and "meta_json" in pairs:
        for shard, key, meta in zip(pairs["shard"], pairs["key"], pairs["meta_json"]):
            if isinstance(meta, str) and meta:
                try:
                    record = json.loads(meta)
                except json.JSONDecodeError:
                    continue
                name = next((record[f] for f in IMAGE_FIELDS if isinstance(record.get(f), str)), None)
                if name:
                    images[(shard, key)] = name
    out["image"] = [images.get((s, k), k) for s, k in zip(out["shard"], out["key"])]
    return out


def _count_pairs(rows: pd.DataFrame) -> int:
    """How many judged pairs ``rows`` rate: a generic file may rate a pair in several rows (one per annotator)."""
    return int(rows["pair"].nunique()) if "pair" in rows else len(rows)


def _unmatched_note(joined: pd.DataFrame, metric: pd.DataFrame, on: list[str], how: str) -> str | None:
    """How the join was made, with a judged pair it did not find next to one the warehouse has."""
    missing = joined[joined["_merge"].eq("left_only")]
    if missing.empty:
        return None

    def show(row) -> str:
        return " / ".join(repr(row[c]) for c in on)

    stored = f"e.g. {show(metric.iloc[0])}" if len(metric) else "none"
    return (f"joined on {how}: {_count_pairs(missing)} judged pairs are not in the warehouse's quality_scores "
            f"(e.g. {show(missing.iloc[0])}; the warehouse has {stored})")


def _joins_on_key(judgments: pd.DataFrame) -> bool:
    """On the key where every row names one, or where some do and no row names its image and caption (a key-only
    file with a blank cell: its other rows still join, the blank one is unmatched); a CSV's blank key column
    (every cell "") names no key, so the join is on image and caption."""
    if "key" not in judgments:
        return False
    keyed = judgments["key"].map(_present)
    pictured = judgments["image"].map(_present) & judgments["caption"].map(_present)
    return bool(keyed.all() or (keyed.any() and not pictured.any()))


def join_scores(judgments: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """Judgments with the warehouse's ``metric``: on (shard,) key when the judgments carry keys (a key
    alone must name one shard of ``scores``), else on the image file name and the caption (whitespace
    and case folded). Pairs scored more than once (the same image and caption in two shards) take
    their mean. ``attrs["unmatched_note"]`` says how pairs were joined and shows one not found next to
    one the warehouse has, so that a join which finds nothing names its cause."""
    if _joins_on_key(judgments):
        sharded = judgments["shard"].map(_present) if "shard" in judgments else pd.Series(False, judgments.index)
        if sharded.any() and not sharded.all():  # a join on the key alone would take a named shard for another
            raise ValueError(f"{judgments.attrs.get('path') or 'the judgment file'}: {int((~sharded).sum())} row(s) "
                             f"name no shard while {int(sharded.sum())} do: fill the shard column on every row, or "
                             "leave it out to join on the key alone")
        on = ["shard", "key"] if sharded.all() and "shard" in judgments else ["key"]
        if on == ["key"]:
            require_unambiguous_keys(judgments["key"], scores, judgments.attrs.get("path") or "the judgment file",
                                     "the warehouse's quality_scores")
        metric = scores.groupby(on, as_index=False)["metric"].mean()
        left = judgments.copy()
        for column in on:
            left[column] = left[column].astype(str)
            metric[column] = metric[column].astype(str)
        joined = left.merge(metric, on=on, how="left", indicator=True)
        note = _unmatched_note(joined, metric, on, " and ".join(on))
        if note and judgments["key"].map(lambda k: isinstance(k, numbers.Number) and not isinstance(k, bool)).any():
            # a JSON number keeps no leading zeros: 0 may have meant "000000" or "0000000", so no guess is made
            note += ("; the file's keys are JSON numbers, which keep no leading zeros: write each key as a string, "
                     "exactly as the warehouse names the sample")
    else:
        def comparable(df: pd.DataFrame) -> pd.DataFrame:
            return df.assign(_image=df["image"].map(image_id), _caption=df["caption"].map(normalize_caption))

        metric = comparable(scores).groupby(["_image", "_caption"], as_index=False)["metric"].mean()
        joined = comparable(judgments).merge(metric, on=["_image", "_caption"], how="left", indicator=True)
        note = _unmatched_note(joined, metric, ["_image", "_caption"], "image file name and caption (case and "
                               "whitespace folded)")
        if note:
            note += ": do the warehouse's pairs come from these judgments?"
        joined = joined.drop(columns=["_image", "_caption"])
    joined = joined.drop(columns=["_merge"])
    joined.attrs.update(judgments.attrs)
    joined.attrs["matched"] = int(joined["metric"].notna().sum())
    joined.attrs["unmatched_note"] = note
    return joined


def reference_minilm_scores(judgments: pd.DataFrame) -> np.ndarray:
    """The reference-caption baseline: for each candidate, the highest all-MiniLM-L6-v2 cosine to one of
    its image's reference captions (the candidate itself left out). Text only: it needs no image
    and no warehouse, so it checks that the harness runs end to end."""
    from curation_pipeline.scoring.signals.embedding import caption_embeddings

    if "references" not in judgments:
        raise ValueError("the reference baseline needs reference captions: the Flickr8k captions file "
                         "(--captions) or a 'references' list per record")
    refs = [[r for r in (rs if isinstance(rs, list) else []) if normalize_caption(r) != normalize_caption(c)]
            for rs, c in zip(judgments["references"], judgments["caption"])]
    texts = sorted({t for rs in refs for t in rs} | set(judgments["caption"].astype(str)))
    index = {t: i for i, t in enumerate(texts)}
    vectors = caption_embeddings(texts)
    out = np.full(len(judgments), np.nan)
    for row, (caption, rs) in enumerate(zip(judgments["caption"].astype(str), refs)):
        if rs:
            out[row] = float(np.max(vectors[[index[r] for r in rs]] @ vectors[index[caption]]))
    return out


def write_judgment_shards(judgments: pd.DataFrame, images_dir: str | Path, out_dir: str | Path,
                          per_shard: int = 1000, prefix: str = "judged") -> list[Path]:
    """Webdataset shards of the judged pairs (image bytes, caption, json naming the image), so
    `curate run` can score them; `curate evaluate` then joins on image and caption."""
    from curation_pipeline.shards.writer import write_tar

    images_dir, out_dir = Path(images_dir), Path(out_dir)
    for column in ("image", "caption"):  # a keyed file judges pairs already in a warehouse: nothing to shard
        given = judgments[column].map(lambda v: isinstance(v, str) and bool(v.strip())) if column in judgments else None
        if given is None or not given.all():
            short = len(judgments) if given is None else int((~given).sum())
            raise ValueError(f"--make-shards needs an image file name and a caption in every judged row: {short} of "
                             f"{len(judgments)} rows have no {column} (a file keyed by sample key judges pairs "
                             "already in a warehouse: evaluate them there with --warehouse)")
    unique = judgments.drop_duplicates(["image", "caption"])[["image", "caption"]].reset_index(drop=True)
    missing = [img for img in unique["image"].unique() if not (images_dir / img).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} judged images are not in {images_dir} (first: {missing[0]})")
    out_dir.mkdir(parents=True, exist_ok=True)

    def sample(i: int, image: str, caption: str) -> list[tuple[str, bytes]]:
        key, ext = f"{i:07d}", Path(image).suffix.lstrip(".").lower() or "jpg"
        return [(f"{key}.{ext}", (images_dir / image).read_bytes()), (f"{key}.txt", str(caption).encode("utf-8")),
                (f"{key}.json", json.dumps({"image": image, "caption": caption}).encode("utf-8"))]

    paths = []
    for start in range(0, len(unique), per_shard):
        part = unique.iloc[start:start + per_shard].itertuples(index=False)
        members = (m for i, (image, caption) in enumerate(part, start) for m in sample(i, image, caption))
        paths.append(write_tar(out_dir / f"{prefix}-{start // per_shard:06d}.tar", members))
    return paths


PROTOCOLS = ("mean", "each")
# The row the published Flickr8k-Expert figures (CLIP-S 51.2, PAC-S 54.3) come from: each expert score a row.
HEADLINE_PROTOCOL = "each"


def headline(report: dict) -> dict:
    """The result row to show alone: ``HEADLINE_PROTOCOL`` where it was computed, else the first row
    (CrowdFlower and generic files have one)."""
    return next((r for r in report["results"] if r["protocol"] == HEADLINE_PROTOCOL), report["results"][0])


def undefined_cause(report: dict, metric_name: str, option: str = "--score") -> str | None:
    """Why a row of ``report`` has no coefficients (``agreement.constant_cause``: a side constant over its
    rows), naming the row when there are several: Expert's mean per pair can be one value while the single
    expert scores are not. None when every row has them; a row of NaN printed or stored looks like a result."""
    from curation_pipeline.evaluation.agreement import constant_cause

    for row in report["results"]:
        cause = constant_cause(row, metric_name, option)
        if cause:
            return f"{row['label']}: {cause}" if len(report["results"]) > 1 else cause
    return None


def evaluate_agreement(joined: pd.DataFrame, *, protocols=("mean", "each"), n_boot: int = 1000,
                       seed: int = 0) -> dict:
    """Correlations of ``metric`` with the human ``score`` (Expert: per protocol). Plain JSON types."""
    from curation_pipeline.evaluation.agreement import comparable, correlations

    fmt = joined.attrs.get("format", "generic")
    numeric = joined[["score", "metric"]].apply(pd.to_numeric, errors="coerce")
    scored = joined[comparable(numeric["score"], numeric["metric"])]  # the rows correlations() keeps
    note = joined.attrs.get("unmatched_note")
    human = np.isfinite(numeric["score"].to_numpy(dtype=float))
    # pairs are what was judged; rows are ratings (several per pair where a generic file has one row per annotator)
    report = {"format": fmt, "path": joined.attrs.get("path"), "judged_pairs": _count_pairs(joined),
              "matched_pairs": _count_pairs(scored), "judged_rows": int(len(joined)), "matched_rows": int(len(scored)),
              "skipped_references": int(joined.attrs.get("skipped_references", 0)),
              # why the rows not scored were left out: no human score that is a number, or no score of the metric
              # (not in the warehouse, or unknown there)
              "no_human_score_rows": int((~human).sum()), "unread_human_scores": joined.attrs.get("unread_scores", []),
              "no_metric_rows": int((human & ~np.isfinite(numeric["metric"].to_numpy(dtype=float))).sum()),
              "unmatched_note": note, "results": []}
    if len(scored) < 3:
        why = _left_out(report, "a score of the metric") + ([note] if note else [])
        raise ValueError(f"only {_scored_of_judged(report)} have a finite score to compare"
                         + (f": {'; '.join(why)}" if why else ""))
    if fmt == "expert" and "ratings" in scored:
        for protocol in protocols:
            if protocol == "mean":
                result = correlations(scored["score"], scored["metric"], n_boot=n_boot, seed=seed)
                label = "mean of the 3 expert scores per pair"
            else:
                ratings = np.array(scored["ratings"].tolist(), dtype=float)
                k = ratings.shape[1]
                result = correlations(ratings.reshape(-1), np.repeat(scored["metric"].to_numpy(), k),
                                      groups=np.repeat(np.arange(len(scored)), k), n_boot=n_boot, seed=seed)
                label = "each expert score (CLIPScore's rows)"
            report["results"].append({"protocol": protocol, "label": label, **result})
    else:
        label = "share of yes per pair" if fmt == "crowdflower" else "human score per pair"
        # a pair rated in several rows (one per annotator) is drawn whole, so its ratings do not narrow the interval
        groups = scored["pair"].to_numpy() if "pair" in scored else None
        result = correlations(scored["score"], scored["metric"], groups=groups, n_boot=n_boot, seed=seed)
        if result["n_groups"] < result["n"]:
            label = "each rating (rows), drawn by pair"
        report["results"].append({"protocol": "pair", "label": label, **result})
    return report


BASELINES = ("ref_minilm",)


def agreement_report(judgments_path, score: str, *, fmt: str = "auto", captions_file=None,
                     warehouse_root: str | None = None, n_boot: int = 1000, seed: int = 0,
                     skip_references: bool = True, protocols=PROTOCOLS) -> dict:
    """Read the judgments, get the score (a warehouse column, or the ``ref_minilm`` baseline), correlate."""
    judgments = read_judgments(judgments_path, fmt, captions_file, skip_references)
    if score in BASELINES:
        joined = judgments.copy()
        joined["metric"] = reference_minilm_scores(judgments)
        joined.attrs.update(judgments.attrs)
    else:
        from curation_pipeline.storage.warehouse import Warehouse

        if not warehouse_root:
            raise ValueError(f"score {score!r} is a warehouse column: give the warehouse (or use --score ref_minilm)")
        joined = join_scores(judgments, warehouse_scores(Warehouse(warehouse_root), score))
    report = evaluate_agreement(joined, protocols=protocols, n_boot=n_boot, seed=seed)
    report["score"] = score
    report["warehouse"] = None if score in BASELINES else warehouse_root
    return report


def _several_rows(report: dict) -> bool:
    """Whether some pair is rated in several rows: rows are then counted as ratings, apart from pairs."""
    return report["judged_rows"] != report["judged_pairs"]


def _scored_of_judged(report: dict) -> str:
    """The "M of N judged pairs" a report says, with the ratings where a pair has several rows."""
    said = f"{report['matched_pairs']} of {report['judged_pairs']} judged pairs"
    return said + (f" ({report['matched_rows']} of {report['judged_rows']} ratings)" if _several_rows(report) else "")


def _left_out(report: dict, no_metric: str) -> list[str]:
    """Why judged rows were not compared: no human score that is a number (with examples), no ``no_metric``."""
    unit = " ratings" if _several_rows(report) else ""
    examples = ", ".join(repr(v) for v in report.get("unread_human_scores") or [])
    why = [f"{report['no_human_score_rows']}{unit} without a human score that is a number"
           + (f" (e.g. {examples})" if examples else "")] if report.get("no_human_score_rows") else []
    return why + ([f"{report['no_metric_rows']}{unit} without {no_metric}"] if report.get("no_metric_rows") else [])


def format_agreement(report: dict) -> str:
    from curation_pipeline.evaluation.agreement import format_correlations

    title = f"{report['score']} vs {report['format']} judgments ({report['path']}): {_scored_of_judged(report)} scored"
    if report.get("skipped_references"):
        title += f"; {report['skipped_references']} candidates that are their image's own reference left out"
    title += "".join(f"; {why}" for why in _left_out(report, f"a {report['score']} score"))
    if report.get("unmatched_note"):
        title += f"\nunmatched: {report['unmatched_note']}"
    return format_correlations([(r["label"], r) for r in report["results"]], title)
