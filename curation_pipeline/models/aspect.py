"""Bound what an image processor makes of an image of extreme aspect ratio.

CLIP-style processors resize the SHORT side to the model's size and then centre-crop, so a 1x8000
banner (a few hundred bytes) becomes 224 x 1,792,000 pixels first: gigabytes and tens of seconds,
and at 1x40000 the OOM killer, which no retry can catch. Padding to a square first (LLaVA's
``expand2square``) makes a canvas of the long side squared, with the same effect. Images up to
``MAX_ASPECT`` (beyond web banners, 970x66 being ~15:1, and common panoramas) are handed over
untouched, so they keep the reference's exact pixels; only more extreme ones are reduced. Cropped
ones usually still give the reference's pixels exactly; shrunk ones (padding) and cropped ones with
no exactly aligned region can differ slightly from the reference's (resampling).
"""

from __future__ import annotations

MAX_ASPECT = 16  # long side / short side beyond which an image is reduced before the processor


def model_input(image, image_processor, *, pad: bool = False):
    """What a model's image processor is given for a pair's image: the authors' decode (``model_image``),
    RGB, bounded (``bound_aspect``). One place for every model path (CLIP, released, chat VLMs)."""
    from curation_pipeline.shards.reader import model_image

    return bound_aspect(model_image(image).convert("RGB"), image_processor, pad=pad)


def _get(size, key: str) -> int | None:
    """A key of a processor's size dict (a plain dict, or transformers 5's SizeDict)."""
    value = size.get(key) if size is not None else None
    return int(value) if value else None


def floor_offset(excess: int) -> int:
    """transformers' centre-crop offset for ``excess`` pixels beyond the crop."""
    return excess // 2


def bound_aspect(image, image_processor, *, pad: bool = False, crop_offset=floor_offset):
    """``image`` (RGB, PIL) as it can be handed to ``image_processor`` (after padding to a square when
    ``pad``) at a cost bounded whatever its aspect ratio; the same image when its aspect ratio is at most
    ``MAX_ASPECT`` or the processor makes nothing large of it.

    Without ``pad``, for a processor that resizes the short side to ``shortest_edge`` and centre-crops
    (CLIP): a region of ``MAX_ASPECT`` to twice that many short sides about the centre, which holds
    everything the crop sees (``_region``), so the processor resizes at most ``2 * MAX_ASPECT`` crops'
    worth of pixels. Fixed-size (SigLIP) and patch-budget (NaFlex) processors resize the whole image
    straight to a bounded size: untouched. With ``pad``: an image whose long side exceeds ``MAX_ASPECT``
    times the processor's size is first shrunk to that long side (keeping its aspect ratio, with the
    processor's resampling): the square canvas is then at most that side squared, or ``MAX_ASPECT``
    times the image, and the processor shrinks it to its size anyway. ``crop_offset`` is the centre
    crop's offset rule of whatever resizes and crops next (torchvision's rounds: CLIPScore).
    """
    width, height = image.size
    short, long = min(width, height), max(width, height)
    if long <= MAX_ASPECT * short or not getattr(image_processor, "do_resize", True):
        return image
    size = getattr(image_processor, "size", None)
    if pad:
        side = _get(size, "shortest_edge") or _get(size, "longest_edge") or max(
            _get(size, "height") or 0, _get(size, "width") or 0)
        if not side or long <= MAX_ASPECT * side:
            return image
        scale = MAX_ASPECT * side / long
        target = (MAX_ASPECT * side, max(1, round(short * scale)))
        resample = getattr(image_processor, "resample", None)
        if not isinstance(resample, int):  # unset, or a torchvision mode: CLIP's own
            from PIL import Image

            resample = Image.Resampling.BICUBIC
        return image.resize(target if width > height else target[::-1], resample)
    edge = _get(size, "shortest_edge")
    crop = getattr(image_processor, "crop_size", None)
    if (not edge or _get(size, "longest_edge") or not getattr(image_processor, "do_center_crop", False)
            or crop is None):
        return image
    crop_long = (_get(crop, "height") if height > width else _get(crop, "width")) or edge
    # at least twice what the crop spans (crop_long / edge short sides), and MAX_ASPECT short sides
    least = short * max(MAX_ASPECT, -(-2 * crop_long // edge))
    if least >= long:
        return image
    start, keep = _region(short, long, edge, crop_long, least, crop_offset)
    if keep == long:
        return image
    return image.crop((0, start, width, start + keep) if height > width else (start, 0, start + keep, height))


def _region(short: int, long: int, edge: int, crop_long: int, least: int,
            crop_offset=floor_offset) -> tuple[int, int]:
    """(start, length) along the long side of a region at least ``least`` long whose resize and centre
    crop samples the original where those of the whole image do (resized long side
    ``int(edge * long / short)``, crop offset ``crop_offset(resized - crop)``): its pixels are then the
    reference's. The whole side (exact) when it is at most ``2 * least``; else the closest of the lengths
    up to that when none matches exactly (or the processor rounds otherwise); the centre region when none fits."""

    def first_sample(length: int) -> tuple[float, float]:  # where the crop's first row reads, and its step
        resized = int(edge * length / short)
        return (crop_offset(resized - crop_long) + 0.5) * length / resized, length / resized

    target, step = first_sample(long)
    best = (float("inf"), (long - least) // 2, least)
    for keep in range(least, min(long, 2 * least) + 1):
        own, own_step = first_sample(keep)
        start = round(target - own)
        error = abs(target - own - start) + crop_long * abs(own_step - step)
        if 0 <= start <= long - keep and error < best[0]:
            best = (error, start, keep)
            if error < 1e-9:
                break
    return best[1], best[2]
