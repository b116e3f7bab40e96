"""Photos and captions the repository makes itself, in the Flickr8k folder layout.

The test suite must run on a fresh clone without ``../shared``. So when the Flickr8k
photos are absent (or ``CURATE_EVALDATA`` points elsewhere), tests get this set instead:
deterministic crops of the public-domain photos bundled in the scikit-image wheel,
re-encoded as JPEG at the sizes the tests need (DataComp's 200 px rule, 500 px for the
OCR and sharpness tests, a 150x200 thumbnail, a 200x200 square, a 200x66 strip), each
with five human-style captions written for it. Layout: ``images/*.jpg`` and
``captions.jsonl`` (``{"image": "images/<name>.jpg", "captions": [5 strings]}``).
"""

from __future__ import annotations

import io
import json
import os
import random
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

N_ROWS = 300

# Five captions per photo, in the style of human image descriptions: plain sentences, 6-18 words.
CAPTIONS: dict[str, list[str]] = {
    "astronaut": [
        "A smiling astronaut in an orange suit poses in front of an American flag.",
        "An astronaut holds her helmet and smiles for an official portrait.",
        "A woman in an orange flight suit stands next to a flag.",
        "Portrait of a female astronaut with short dark hair wearing an orange suit.",
        "An astronaut is smiling at the camera.",
    ],
    "coffee": [
        "A red cup of coffee sits on a saucer with a spoon.",
        "A cup of black coffee on a wooden table.",
        "Coffee in a red cup with a matching saucer and a silver spoon on a table.",
        "A close view of a hot drink in a red mug.",
        "Someone has left a full cup of coffee on the table next to a spoon.",
    ],
    "chelsea": [
        "A tabby cat with green eyes looks at the camera.",
        "Close up of an orange and brown striped cat.",
        "A cat is staring straight ahead with its ears up.",
        "The face of a striped cat with long white whiskers and green eyes.",
        "A young tabby cat sits still and watches the photographer.",
    ],
    "rocket": [
        "A rocket stands on the launch pad at dusk.",
        "A space shuttle waits on the pad between two tall towers.",
        "The launch pad with a rocket ready to go under a cloudy evening sky.",
        "A tall white rocket surrounded by lightning towers.",
        "A rocket is ready for launch while the sun goes down behind the clouds.",
    ],
    "camera": [
        "A man in a dark coat looks through a camera on a tripod.",
        "A black and white photo of a photographer working in a field.",
        "A photographer adjusts his camera outside on a grassy lawn.",
        "A man stands behind an old camera with buildings far in the background.",
        "Someone is taking a picture with a camera on a tripod.",
    ],
    "coins": [
        "Rows of old coins lie on a dark cloth.",
        "A collection of silver and copper coins arranged in neat rows.",
        "Two dozen old coins are laid out on a black background for a photo.",
        "Many coins of different sizes in a grey photo.",
        "A coin collection displayed in four rows on a dark table.",
    ],
    "hubble_deep_field": [
        "Hundreds of distant galaxies shine against the black sky.",
        "A deep space photo full of small galaxies of many colours.",
        "Galaxies and stars scattered across a dark night sky.",
        "A telescope image showing countless tiny galaxies far away in space.",
        "Bright spots of light from faraway galaxies in deep space.",
    ],
    "immunohistochemistry": [
        "A microscope image of tissue stained brown and blue.",
        "Cells under a microscope with brown stain and dark blue nuclei.",
        "A slice of tissue seen through a microscope in pink and brown colours.",
        "Stained cells fill the view of a microscope.",
        "A close look at human tissue with many small blue cell nuclei and brown patches.",
    ],
    "text": [
        "Handwritten notes on a sheet of paper seen at an angle.",
        "A page of mathematical notes written by hand.",
        "Someone wrote equations in pencil on a piece of paper.",
        "A close view of handwriting on a white page.",
        "Notes from a math class are written across a sheet of lined paper.",
    ],
    "horse": [
        "The black shape of a horse on a white background.",
        "A silhouette of a horse standing still.",
        "A dark outline of a standing horse with its tail hanging down.",
        "A black horse shape drawn against a plain white page.",
        "The silhouette of a horse seen from the side.",
    ],
    "brick": [
        "A grey brick wall seen at an angle.",
        "Close up of rows of old bricks in a wall.",
        "A brick wall with light mortar between the grey bricks.",
        "The side of a building made of grey bricks.",
        "Bricks of a wall stretch away from the camera in even rows.",
    ],
    "grass": [
        "Blades of grass fill the whole picture.",
        "A close view of a lawn with long thin blades of grass.",
        "Grass growing thick and tall in a field.",
        "A black and white picture of grass seen from above.",
        "Thin leaves of grass cross each other in every direction.",
    ],
    "gravel": [
        "A bed of small grey stones on the ground.",
        "Close up of gravel on a garden path.",
        "Many small pebbles of different shapes lie together.",
        "A path covered in loose gravel seen from above.",
        "Rough little stones fill the frame of this grey photo.",
    ],
    "retina": [
        "A photo of the back of a human eye showing blood vessels.",
        "The retina of an eye with the optic disc on one side.",
        "Red and orange blood vessels spread across the inside of an eye.",
        "A medical picture of a retina taken by an eye doctor.",
        "Blood vessels branch out over the orange surface of the retina.",
    ],
}
# File order decides what ``sorted(glob("*.jpg"))[:n]`` gives a test: clean, sharp, text-free photos first.
ORDER = ["astronaut", "chelsea", "rocket", "camera", "coins", "brick", "grass", "gravel", "immunohistochemistry",
         "retina", "hubble_deep_field", "coffee", "text", "horse"]
SPECIAL_SIZES = [(150, 200), (200, 200), (200, 66)]  # DataComp's image rules: fails, exactly passes, fails both
NATIVE_LARGE = ("rocket", "grass", "retina", "hubble_deep_field")  # bundled at 512-1411 px, sharpness scale-stable


@lru_cache(maxsize=None)
def _photo(name: str) -> Image.Image:
    from skimage import data

    array = getattr(data, name)()
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    return Image.fromarray(array).convert("RGB")


def _crop(image: Image.Image, rng: random.Random, size: tuple[int, int] | None, short_side: int | None) -> Image.Image:
    w, h = image.size
    if size is not None:  # a crop of the requested aspect, scaled to exactly ``size``
        aspect = size[0] / size[1]
        cw, ch = (min(w, int(h * aspect)), min(h, int(w / aspect)))
        cw, ch = (cw, int(cw / aspect)) if int(cw / aspect) <= h else (int(ch * aspect), ch)
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        return image.crop((x, y, x + cw, y + ch)).resize(size, Image.Resampling.LANCZOS)
    if short_side is None:  # native resolution: a slight crop, never resampled (keeps the photo's sharpness)
        cw, ch = int(w * rng.uniform(0.98, 1.0)), int(h * rng.uniform(0.98, 1.0))
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        return image.crop((x, y, x + cw, y + ch))
    cw, ch = int(w * rng.uniform(0.75, 1.0)), int(h * rng.uniform(0.75, 1.0))
    cw, ch = min(cw, 2 * ch), min(ch, 2 * cw)
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    image = image.crop((x, y, x + cw, y + ch))
    scale = short_side / min(image.size)
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                        Image.Resampling.LANCZOS)


def photo_bytes(name: str, seed: int, size: tuple[int, int] | None = None, short_side: int | None = 220,
                quality: int = 88) -> bytes:
    """A deterministic JPEG crop of one bundled photo."""
    image = _crop(_photo(name), random.Random(seed), size, short_side)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def caption_rows(n: int) -> list[list[str]]:
    """Five captions per row, row i describing photo ``ORDER[i % 14]``; each column cycles through all
    five captions of every photo, so the columns share one length distribution (as human captions do)."""
    return [[CAPTIONS[ORDER[i % len(ORDER)]][(i // len(ORDER) + j) % 5] for j in range(5)] for i in range(n)]


def make_photo_set(root: Path, n_rows: int = N_ROWS) -> Path:
    """Write the set under ``root`` (once: an existing complete set is reused); returns ``root``. Each file is
    written under a name of this process and renamed into place: test workers (pytest-xdist) make it side by
    side, and none reads a file another is still writing."""
    done = root / "captions.jsonl"
    if done.is_file():
        return root
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows, captions = [], caption_rows(n_rows)
    for i in range(n_rows):
        subject = ORDER[i % len(ORDER)]
        if i < 2 * len(ORDER) and subject in NATIVE_LARGE:
            size, short = None, None  # >= 500 px wide, at the photo's own resolution
        elif len(ORDER) * 3 <= i < len(ORDER) * 3 + len(SPECIAL_SIZES):
            size, short = SPECIAL_SIZES[i - len(ORDER) * 3], 0
        elif i % 3 == 0:
            size, short = None, 200 + (i * 7) % 60  # clears DataComp's 200 px rule
        else:
            size, short = (200, 130 + (i * 11) % 70), 0  # a 200 px wide thumbnail, as Flickr8k's
        name = f"g{i:05d}_{subject}.jpg"
        part = images / f".{name}.{os.getpid()}.partial"
        part.write_bytes(photo_bytes(subject, i, size, short))
        part.replace(images / name)
        rows.append({"image": f"images/{name}", "captions": captions[i]})
    tmp = root / f".captions.jsonl.{os.getpid()}.partial"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(done)
    return root


def members(n: int, prefix: str = "p", start: int = 0, short_side: int = 240) -> list[tuple[str, bytes]]:
    """``n`` samples ``{prefix}{i:06d}.jpg`` + ``.txt``: distinct crops of the bundled photos."""
    out = []
    for i in range(start, start + n):
        subject = ORDER[i % len(ORDER)]
        key = f"{prefix}{i:06d}"
        out.append((f"{key}.jpg", photo_bytes(subject, 1000 + i, short_side=short_side)))
        out.append((f"{key}.txt", CAPTIONS[subject][i % 5].encode("utf-8")))
    return out
