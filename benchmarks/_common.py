"""Shared helpers for the benchmark scripts: images, timing, the RESULT line.

Images come from the Flickr8k photos in ``../shared/evaldata/flickr8k_1k_small`` (override
the folder with ``CURATE_FLICKR_DIR``). With ``--smoke`` and no such folder (a fresh clone),
the scripts fall back to photos the repository can make itself: crops of the public-domain
photos bundled in the scikit-image wheel, captioned as in ``curation_pipeline.demo``.
"""

from __future__ import annotations

import atexit
import io
import json
import os
import random
import shutil
import sys
import tempfile
import time
from functools import lru_cache
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image  # noqa: E402

from curation_pipeline.pairs import PairBatch  # noqa: E402

FLICKR = Path(os.environ.get("CURATE_FLICKR_DIR")
              or Path(__file__).resolve().parents[2] / "shared" / "evaldata" / "flickr8k_1k_small")


def flickr_available() -> bool:
    return (FLICKR / "captions.jsonl").is_file()


_GENERATED: list[Path] = []  # folders of generated images, removed at exit


@atexit.register
def remove_generated() -> None:
    """Remove the generated images; a script that leaves through ``os._exit`` (no atexit) calls it first."""
    while _GENERATED:
        shutil.rmtree(_GENERATED.pop(), ignore_errors=True)


def _generated_rows(n: int) -> list[tuple[Path, str]]:
    """``n`` JPEG files (deterministic crops of scikit-image's bundled photos, shorter side
    200-240 px, so DataComp's size rule passes) with their captions, in a temp folder."""
    import numpy as np
    from skimage import data

    from curation_pipeline.demo import PHOTOS

    folder = Path(tempfile.mkdtemp(prefix="bench-images-"))
    _GENERATED.append(folder)
    rows = []
    for i in range(n):
        subject = PHOTOS[i % len(PHOTOS)]
        array = getattr(data, subject.name)()
        if array.dtype == bool:
            array = array.astype(np.uint8) * 255
        image = Image.fromarray(array).convert("RGB")
        rng = random.Random(i)
        w, h = image.size
        cw, ch = int(w * rng.uniform(0.7, 1.0)), int(h * rng.uniform(0.7, 1.0))
        cw, ch = min(cw, 2 * ch), min(ch, 2 * cw)
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        image = image.crop((x, y, x + cw, y + ch))
        scale = rng.randint(200, 240) / min(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)
        path = folder / f"generated_{i:05d}_{subject.name}.jpg"
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=85)
        path.write_bytes(buffer.getvalue())
        rows.append((path, subject.caption))
    return rows


@lru_cache(maxsize=None)
def _rows(n: int | None, smoke: bool) -> tuple[tuple[Path, str], ...]:
    if flickr_available():
        with open(FLICKR / "captions.jsonl", encoding="utf-8") as handle:
            rows = [json.loads(line) for line in handle]
        rows = rows if n is None else rows[:n]
        return tuple((FLICKR / r["image"], r["captions"][0]) for r in rows)
    if not smoke:
        raise SystemExit(f"Flickr photos not found at {FLICKR} (set CURATE_FLICKR_DIR, or run with --smoke "
                         "to use generated images)")
    return tuple(_generated_rows(n if n is not None else 2 * 14))


def image_rows(n: int | None = None, smoke: bool = False) -> tuple[tuple[Path, str], ...]:
    """(image file, first caption) for the first ``n`` Flickr photos (all of them if ``n`` is
    None); generated images instead when ``smoke`` and the Flickr folder is missing."""
    return _rows(n, smoke)


def flickr_batch(n: int, smoke: bool = False) -> PairBatch:
    """Real photos with their first caption (decoded once, outside every timing)."""
    rows = image_rows(n, smoke)
    return PairBatch([path.stem for path, _ in rows], [caption for _, caption in rows],
                     [Image.open(path).convert("RGB") for path, _ in rows])


def add_smoke_flag(parser, **sizes) -> None:
    """``--smoke``: a tiny end-to-end run (seconds): ``sizes`` replace those options' values
    wherever they were left at their defaults, so e.g. ``--smoke --pairs 4`` still works."""
    parser.add_argument("--smoke", action="store_true",
                        help="tiny end-to-end run in seconds (" + ", ".join(f"{k}={v}" for k, v in sizes.items())
                        + "); works without ../shared")
    parser.set_defaults(_smoke_sizes=sizes)


_SMOKE = False  # set by parse_args: this process runs a --smoke run


def parse_args(parser, argv=None):
    """``parser.parse_args`` with the smoke sizes applied where an option was left at its default; records
    the mode, so the RESULT line and the printed verdicts say when the figures come from a smoke run."""
    global _SMOKE
    args = parser.parse_args(argv)
    _SMOKE = bool(args.smoke)
    if args.smoke:
        defaults = {name: parser.get_default(name) for name in args._smoke_sizes}
        for name, value in args._smoke_sizes.items():
            if getattr(args, name) == defaults[name]:
                setattr(args, name, value)
    return args


def compile_package() -> None:
    """Byte-compile the package first, as ``make setup`` and pip's regular installs do: with
    PYTHONDONTWRITEBYTECODE set (as in CI and some containers) every process would otherwise compile
    it again, about 0.6 s of each run's start that says nothing about the pipeline."""
    import compileall

    compileall.compile_dir(str(Path(__file__).resolve().parents[1] / "curation_pipeline"), quiet=1)


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def target(text: str) -> str:
    """What to print after a figure: ``(target >= 3)``; a smoke run's figures (tiny sizes, a smaller model
    in places) are no measurement, so it prints none against a target."""
    return f"(SMOKE: no figures; a full run's target is {text})" if _SMOKE else f"(target {text})"


def met(ok: bool) -> str:
    """A target's printed verdict: ``met`` / ``NOT met``, and no verdict in a smoke run."""
    return "SMOKE: no figures" if _SMOKE else ("met" if ok else "NOT met")


def verdict(ok: bool) -> bool | None:
    """A target's verdict for the RESULT line: None in a smoke run, whose figures decide nothing."""
    return None if _SMOKE else bool(ok)


def result_line(figures: dict) -> None:
    """The last stdout line, ``RESULT {json}``; a smoke run's starts with ``"smoke": true``."""
    figures = {"smoke": True, **figures} if _SMOKE else figures
    print("RESULT " + json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in figures.items()}))
