"""Synthetic faces in UTKFace format: a dataset that needs no download.

`write_synthetic` draws face-like images whose pixels carry learnable cues:
skin tone encodes race, hair length encodes gender, and grey hair, wrinkles
and (for children) face shape encode age. Position, scale, rotation, colours
and noise vary so that the cues have to be learned, not read off one pixel.
The cues are drawn large enough to survive downscaling to 32x32, so a tiny CNN
on a CPU beats the constant predictors within a minute: that makes it the
demo and test data for the whole pipeline.

Files are named like UTKFace's (`30_0_3_20170117145159065.jpg.chip.jpg`, with a
few race-missing names as in the real data) and listed by the `utkface`
dataset's code, so the synthetic data exercises the same parsing path.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

from hydranet.core.errors import DataError
from hydranet.core.hookspecs import hookimpl
from hydranet.core.interfaces import Sample
from hydranet.core.paths import CACHE_ENV, SYNTHETIC_CACHE, cache_dir, os_reason, partial_prefix
from hydranet.core.paths import SYNTHETIC_MARKER as MARKER  # what `hydranet cache` looks for
from hydranet.plugins.datasets.utkface import UTKFaceDataset, is_image_name, utkface_key

#: Bump when the drawing changes, so folders made by an older version are not reused.
FORMAT_VERSION = 1
#: UTKFace's race shares (White, Black, Asian, Indian, Others), roughly.
RACE_SHARES = (0.42, 0.19, 0.15, 0.17, 0.07)
#: Share of names written without race, like the three real UTKFace files.
MISSING_RACE_SHARE = 0.002
#: 17 digits, like UTKFace's capture timestamps; the index is added, so names are unique.
DATE_BASE = 20170101000000000
#: Below this many images a process pool costs more to start than it saves.
POOL_MIN_COUNT = 1000

#: Base skin colour per race, spread over lightness and hue so that the five
#: stay separable after jitter and downscaling.
SKIN_TONES = (
    (240, 205, 192),  # White: light, pink
    (86, 56, 40),  # Black: dark
    (232, 204, 140),  # Asian: light, yellow
    (150, 98, 64),  # Indian: medium-dark brown
    (204, 142, 112),  # Others: medium, red
)
HAIR_COLOURS = ((28, 24, 22), (56, 38, 26), (88, 58, 36), (112, 68, 38), (46, 36, 40))
GREY_HAIR = (218, 218, 214)


@dataclass(frozen=True)
class Labels:
    """The labels one face is drawn with; `race_in_name` False drops race from the file name only."""

    age: int
    gender: int
    race: int
    race_in_name: bool = True


def draw_labels(rng: np.random.Generator) -> Labels:
    """UTKFace-like labels: a few children, most adults in their 20s-40s, a long tail to 100."""
    if rng.random() < 0.1:
        age = int(rng.integers(1, 11))
    else:
        age = int(np.clip(round(rng.gamma(5.0, 7.0)), 1, 100))
    gender = int(rng.random() < 0.48)
    race = int(rng.choice(len(RACE_SHARES), p=RACE_SHARES))
    return Labels(age, gender, race)


def file_name(index: int, labels: Labels) -> str:
    """The UTKFace name of image `index`, with the race field left out when `race_in_name` is False."""
    fields = [labels.age, labels.gender] + ([labels.race] if labels.race_in_name else [])
    return "_".join(map(str, fields)) + f"_{DATE_BASE + index}.jpg.chip.jpg"


def missing_race_indices(count: int, seed: int) -> set[int]:
    """Which images get a race-missing name: about 0.2%, and at least one from 200 images on."""
    n = round(count * MISSING_RACE_SHARE)
    if count >= 200:
        n = max(n, 1)
    return {int(i) for i in np.random.default_rng([seed, count]).choice(count, size=n, replace=False)}


# --- drawing ---------------------------------------------------------------------------------

def _jitter(rng: np.random.Generator, colour: tuple[int, ...], amount: float, scale: float = 1.0) -> tuple[int, ...]:
    """`colour` scaled by `scale` plus uniform noise per channel, clipped to bytes."""
    values = np.asarray(colour, dtype=float) * scale + rng.uniform(-amount, amount, size=3)
    return tuple(int(v) for v in np.clip(values, 0, 255))


def _mix(a: tuple[int, ...], b: tuple[int, ...], t: float) -> tuple[int, ...]:
    """Linear blend from colour `a` (t=0) to colour `b` (t=1)."""
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b))


def _box(cx: float, cy: float, rx: float, ry: float) -> tuple[float, float, float, float]:
    return (cx - rx, cy - ry, cx + rx, cy + ry)


def _cap_angles(cut: float) -> tuple[float, float]:
    """PIL chord angles of an ellipse's top part, above `cut` (0 = top, 1 = bottom) of its height."""
    a = math.degrees(math.asin(max(-1.0, min(1.0, 2 * cut - 1))))
    return 180 - a, 360 + a


def _age_cues(age: int) -> dict[str, float]:
    """Monotone functions of age, each 0..1, that the drawing turns into pixels.

    Several cues cover different parts of the range (face shape for children,
    wrinkles from the teens, grey hair from 30) so that age is readable
    everywhere, not only at the extremes.
    """
    return {
        "child": float(np.clip((16 - age) / 15, 0, 1)),
        "wrinkles": float(np.clip((age - 14) / 60, 0, 1)),
        "grey": float(np.clip((age - 28) / 45, 0, 1)),
        "folds": float(np.clip((age - 30) / 45, 0, 1)),
    }


def render_face(rng: np.random.Generator, labels: Labels, size: int) -> Image.Image:
    """One face of `size` x `size` pixels carrying the cues of `labels` (drawn at 2x, then reduced)."""
    s = 2 * size
    cue = _age_cues(labels.age)
    background = _jitter(rng, (150, 150, 150), 70)
    image = Image.new("RGB", (s, s), background)
    draw = ImageDraw.Draw(image)

    scale = rng.uniform(0.85, 1.08)
    h = 0.30 * s * scale  # half-height of the face
    w = h * (0.76 + 0.16 * cue["child"] + rng.uniform(-0.03, 0.03))
    cx = s * (0.5 + rng.uniform(-0.07, 0.07))
    cy = s * (0.47 + rng.uniform(-0.06, 0.06))
    skin = _jitter(rng, SKIN_TONES[labels.race], 10, rng.uniform(0.93, 1.07))
    grey = float(np.clip(cue["grey"] + rng.normal(0, 0.06), 0, 1))
    hair = _mix(_jitter(rng, HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))], 8), GREY_HAIR, grey)

    _draw_body(draw, rng, cx, cy, w, h, s, skin)
    if labels.gender == 1:
        length = rng.uniform(0.55, 1.0)
        draw.rounded_rectangle((cx - 1.28 * w, cy - 1.1 * h, cx + 1.28 * w, cy + h * (0.2 + 0.9 * length)),
                               radius=w * 0.8, fill=hair)
    draw.ellipse(_box(cx, cy, w, h), fill=skin)
    _draw_features(draw, rng, labels, cue, cx, cy, w, h, s, skin, hair)
    # Hair on top: men's hairline recedes with age, a fringe for women.
    cut = 0.30 if labels.gender == 1 else 0.27 - 0.14 * cue["folds"] * rng.uniform(0.5, 1.0)
    draw.chord(_box(cx, cy - 0.04 * h, w * 1.07, h * 1.08), *_cap_angles(cut), fill=hair)

    image = image.rotate(rng.uniform(-8, 8), resample=Image.BILINEAR, fillcolor=background)
    image = image.reduce(2)
    return _add_noise(rng, image)


def _draw_body(draw: ImageDraw.ImageDraw, rng: np.random.Generator,
               cx: float, cy: float, w: float, h: float, s: int, skin: tuple[int, ...]) -> None:
    """Neck and shoulders, so the face is not a lone ellipse on a flat background."""
    shirt = _jitter(rng, (128, 128, 128), 100)
    draw.ellipse((cx - 2.1 * w, cy + 1.05 * h, cx + 2.1 * w, cy + 2.4 * h + s * 0.2), fill=shirt)
    draw.rectangle((cx - 0.42 * w, cy + 0.5 * h, cx + 0.42 * w, cy + 1.2 * h), fill=_mix(skin, (0, 0, 0), 0.12))


def _draw_features(draw: ImageDraw.ImageDraw, rng: np.random.Generator, labels: Labels, cue: dict[str, float],
                   cx: float, cy: float, w: float, h: float, s: int,
                   skin: tuple[int, ...], hair: tuple[int, ...]) -> None:
    """Eyes, nose, mouth, wrinkles, folds and beard: the age cues inside the face."""
    line = max(1, round(s / 64))
    crease = _mix(skin, (40, 25, 20), 0.25 + 0.45 * cue["wrinkles"])
    # Forehead lines: more and darker with age.
    for i in range(int(round(4 * cue["wrinkles"] + 0.3 * (cue["wrinkles"] > 0)))):
        y = cy - h * (0.52 - 0.09 * i)
        draw.arc(_box(cx, y + 0.25 * h, 0.5 * w, 0.3 * h), 230, 310, fill=crease, width=line)
    # Eyes: larger and lower in children.
    eye_y = cy - h * (0.1 - 0.18 * cue["child"])
    eye_r = w * (0.09 + 0.05 * cue["child"])
    for side in (-1, 1):
        ex = cx + side * 0.4 * w
        draw.ellipse(_box(ex, eye_y, eye_r * 1.3, eye_r), fill=(245, 245, 240))
        draw.ellipse(_box(ex, eye_y, eye_r * 0.6, eye_r * 0.6), fill=(30, 25, 25))
        draw.line((ex - eye_r * 1.4, eye_y - eye_r * 1.9, ex + eye_r * 1.4, eye_y - eye_r * 2.1), fill=hair,
                  width=line * 2)
        if cue["folds"] > 0:  # bags under the eyes, then crow's feet
            draw.arc(_box(ex, eye_y + eye_r, eye_r * 1.3, eye_r), 20, 160, fill=crease, width=line)
            draw.line((ex + side * eye_r * 1.6, eye_y, ex + side * eye_r * (1.6 + 1.5 * cue["folds"]),
                       eye_y - eye_r), fill=crease, width=line)
    draw.line((cx, eye_y + 0.1 * h, cx - 0.06 * w, cy + 0.25 * h), fill=_mix(skin, (0, 0, 0), 0.3), width=line)
    mouth_y = cy + h * (0.5 - 0.08 * cue["child"])
    lips = (170, 50, 70) if labels.gender == 1 else _mix(skin, (90, 30, 30), 0.5)
    draw.arc(_box(cx, mouth_y - 0.12 * h, 0.3 * w, 0.12 * h), 30, 150, fill=lips, width=line * 2)
    if cue["folds"] > 0:  # nasolabial folds deepen with age
        for side in (-1, 1):
            draw.line((cx + side * 0.25 * w, cy + 0.15 * h, cx + side * 0.4 * w, mouth_y),
                      fill=crease, width=line * (1 + int(cue["folds"] > 0.5)))
    if labels.gender == 0 and labels.age >= 18 and rng.random() < 0.3:
        draw.chord(_box(cx, cy, w, h), 20, 160, fill=_mix(skin, hair, 0.6))


def _add_noise(rng: np.random.Generator, image: Image.Image) -> Image.Image:
    """Pixel noise and a global brightness change, so that no single pixel value gives a label away."""
    pixels = np.asarray(image, dtype=np.float32) * rng.uniform(0.9, 1.1)
    pixels += rng.normal(0, rng.uniform(3, 9), size=pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


# --- writing ---------------------------------------------------------------------------------

def _write_one(job: tuple[str, int, int, int, bool]) -> None:
    """Draw and save image `index`; everything comes from (seed, index), so workers need no shared state."""
    folder, index, seed, size, race_in_name = job
    rng = np.random.default_rng([seed, index])
    labels = replace(draw_labels(rng), race_in_name=race_in_name)
    render_face(rng, labels, size).save(os.path.join(folder, file_name(index, labels)), quality=92)


def _settings(count: int, size: int, seed: int) -> dict[str, int]:
    return {"count": count, "size": size, "seed": seed, "version": FORMAT_VERSION}


def is_complete(folder: Path, count: int, size: int, seed: int) -> bool:
    """True when `folder` was fully written by `write_synthetic` with these settings.

    The marker is written last and the folder appears by an atomic rename, so
    its presence means every image is there.
    """
    return _made_with(folder) == _settings(count, size, seed)


def _made_with(folder: Path) -> dict[str, Any] | None:
    """The settings in a folder's marker, or None when it has no readable one."""
    try:
        made = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return made if isinstance(made, dict) else None


def _refuse_foreign(out: Path, count: int, size: int, seed: int) -> None:
    """Never write over a folder that holds something else (user data, other settings)."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    wanted = f"count={count}, size={size}, seed={seed}"
    raise DataError(f"{out} already exists and does not hold synthetic faces made with {wanted}; "
                    f"choose a new or empty folder, or delete this one.{_what_is_there(out)}")


def _what_is_there(out: Path) -> str:
    """How to use what a folder already holds, judged from a glance at its files."""
    made = _made_with(out)
    if made is not None:
        return (f" It holds synthetic faces made with count={made.get('count')}, size={made.get('size')}, "
                f"seed={made.get('seed')}: pass those settings to reuse it.")
    if not out.is_dir():
        return ""
    names = [p.name for p, _ in zip(out.iterdir(), range(200))]
    if any(is_image_name(name) and utkface_key(name) for name in names):  # as the utkface dataset reads them
        return (" To read the UTKFace-named images already in it, use the utkface dataset: "
                f"data: {{name: utkface, root: {out}}}")
    if any(name.lower().endswith(".csv") for name in names) or any((out / n).is_dir() for n in names):
        return (" To read the images already in it (class subfolders, or a CSV of labels), use the folder "
                f"dataset: data: {{name: folder, root: {out}}}")
    return ""


def _render_all(folder: Path, count: int, size: int, seed: int, progress: bool | None) -> None:
    missing = missing_race_indices(count, seed)
    jobs = ((str(folder), i, seed, size, i not in missing) for i in range(count))
    bar = tqdm(total=count, desc=f"drawing synthetic faces ({size}px)", unit="img",
               disable=None if progress is None else not progress)  # None: only on a terminal
    workers = min(os.cpu_count() or 1, 8)
    with bar:
        if count < POOL_MIN_COUNT or workers < 2:
            for job in jobs:
                _write_one(job)
                bar.update()
            return
        with multiprocessing.get_context().Pool(workers) as pool:
            for _ in pool.imap_unordered(_write_one, jobs, chunksize=32):
                bar.update()


#: What to do when the folder to draw in cannot be written, unless the caller knows better.
WRITABLE_HINT = "choose a folder you can write to"


def write_synthetic(out_dir: str | Path, count: int, size: int = 64, seed: int = 0,
                    progress: bool | None = None, *, unwritable_hint: str = WRITABLE_HINT) -> Path:
    """Write `count` synthetic faces of `size` px into `out_dir` (reused when already complete).

    Images are drawn into a hidden sibling folder that is renamed into place
    at the end, so an interrupted run leaves no folder that looks complete.
    The same (count, size, seed) always gives the same bytes. A folder that
    cannot be written (read-only, a file in its path, a full disk) is a
    DataError naming it and the reason, ending with `unwritable_hint`.
    """
    out = Path(out_dir).expanduser()
    if is_complete(out, count, size, seed):
        return out
    try:
        _refuse_foreign(out, count, size, seed)
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=partial_prefix(out), dir=out.parent))
    except OSError as error:
        raise _unwritable(out, error, unwritable_hint) from None
    try:
        _render_all(partial, count, size, seed, progress)
        (partial / MARKER).write_text(json.dumps(_settings(count, size, seed)))
        _publish(partial, out, count, size, seed)
    except OSError as error:
        raise _unwritable(out, error, unwritable_hint) from None
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return out


def _unwritable(out: Path, error: OSError, hint: str) -> DataError:
    """The images must be written somewhere: say where they could not be, why, and what to do."""
    reason = os_reason(error)
    existing = next((folder for folder in out.parents if folder.exists()), None)
    if existing is not None and not existing.is_dir():
        reason = f"{existing} is a file, not a folder"
    return DataError(f"cannot write the synthetic faces into {out}: {reason}; {hint}")


def _publish(partial: Path, out: Path, count: int, size: int, seed: int) -> None:
    """Rename the finished folder into place; losing a race to an identical writer is fine."""
    if out.is_dir():
        out.rmdir()  # empty, checked by _refuse_foreign; rename cannot replace a folder
    try:
        os.replace(partial, out)
    except OSError:
        if not is_complete(out, count, size, seed):
            raise


# --- dataset and command ---------------------------------------------------------------------

def default_root(count: int, size: int, seed: int) -> Path:
    """The cache folder for these settings: each combination is drawn once per machine."""
    return cache_dir() / SYNTHETIC_CACHE / f"n{count}-s{size}-seed{seed}"


class SyntheticParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    root: str | None = Field(None, description="Folder to write (or reuse); default: the hydranet cache folder.")
    count: int = Field(2000, ge=1, description="Number of images.")
    size: int = Field(64, ge=16, le=512, description="Image side in pixels.")
    seed: int = Field(0, ge=0, description="Seed of the drawing: the same seed gives the same images.")


class SyntheticDataset(UTKFaceDataset):
    """UTKFace listing of a folder that is drawn on first use (not on construction, which must stay cheap)."""

    missing_root_hint = "it should have been drawn by write_synthetic; check that its parent folder is writable"
    draws_images = True  # `root` is where the images are drawn: `eval --data DIR` reads DIR as UTKFace

    def __init__(self, root: str | Path, count: int, size: int, seed: int, in_cache: bool = False):
        super().__init__(root)
        self.count, self.size, self.seed = count, size, seed
        self.in_cache = in_cache  # drawn in the cache folder (no data.root given)

    @classmethod
    def from_params(cls, params: SyntheticParams) -> SyntheticDataset:  # type: ignore[override]
        if params.root:
            return cls(params.root, params.count, params.size, params.seed)
        return cls(default_root(params.count, params.size, params.seed), params.count, params.size, params.seed,
                   in_cache=True)

    def samples(self) -> list[Sample]:
        hint = (f"the faces are drawn under hydranet's cache folder: set {CACHE_ENV} to a writable folder, or set "
                "data.root to a writable folder to draw them in" if self.in_cache
                else "set data.root to a folder you can write to")
        write_synthetic(self.root, self.count, self.size, self.seed, unwritable_hint=hint)
        return super().samples()


@hookimpl
def register_datasets(register: Any) -> None:
    register("synthetic", SyntheticDataset.from_params, params=SyntheticParams,
             description="Synthetic UTKFace-style faces (age, gender, race cues), drawn on first use; no download.")
