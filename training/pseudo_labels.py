"""Pseudo-labels: a teacher model's confident calls on photos nobody annotated, drawn as extra
training crops (self-training on the unlabelled IDRiD photos; issue 13's lever).

Each photo is prepared exactly as a training photo is (the teacher's preprocessing, which must
be the student's), the teacher predicts it on that working grid with its tiles, TTA and
calibration, and each working pixel inside the disc is labelled lesion where the calibrated
probability is at least ``hi``, background where it is at most ``lo``, and 255 ("unsure":
ignored by the loss) between. Outside the disc is background, as in an annotated mask. The
folder holds one ``<stem>.npz`` per photo (the trainer's cache format: ``x`` float16, ``y``,
``fov``; and ``p``, the teacher's calibrated probability as ``round(255 p)``, 0 outside the disc,
in folders labelled since 2026-12-06) and ``pseudo_labels.json`` (teacher, thresholds,
preprocessing, each photo's label shares, what was left out and why). A run draws them for
``data.pseudo_share`` of its crops (``data.pseudo_labels`` names the folder); with
``data.pseudo_soft`` the crops' target is ``p`` itself on every pixel of the disc (distillation:
the student learns the teacher's probabilities, the ranking between ``lo`` and ``hi`` too)
instead of the hard labels ``y``::

    python -m lesionseg_training.pseudo_labels --teacher runs/r1/best \\
        --images ../shared/data/idrid_unlabeled/images --not-like ../shared/data/idrid/train/images \\
        --out /tmp/pseudo/r1 [--lo 0.05] [--hi 0.5] [--limit N]

``--not-like``: photos that are the same photograph as one of these (IDRiD's grading set
repeats some segmentation photos, smaller) are left out, so a cross-validation fold's photos
never come back as unlabelled training photos. For a fold's run the teacher must be a model
that never trained on that fold's photos (its own fold model).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Generator
from dataclasses import asdict
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from napari_lesionseg.core.atomic import atomic_write_text
from napari_lesionseg.core.errors import LesionsegInputError
from napari_lesionseg.core.image_io import list_images, read_image
from napari_lesionseg.core.inference import work_probability
from napari_lesionseg.core.model_config import PreprocessConfig
from napari_lesionseg.core.model_folder import LoadedModel, load_model_folder
from napari_lesionseg.core.preprocess import prepare
from napari_lesionseg.core.progress import run_to_end

from .data import Prepared

MANIFEST = "pseudo_labels.json"
THUMB = (192, 128)  # width, height: both IDRiD sizes (4288x2848, 1429x949) have this aspect
#: Measured on the 499 unlabelled against the 54 annotated IDRiD photos (high-passed thumbnails):
#: 45 copies at 0.984-0.996, two more at 0.56 and 0.64 (the same eye again, left out too), every
#: other pair at most 0.28; two different annotated photos at most 0.17.
SAME_PHOTO_CORRELATION = 0.5


def thumbnail(path: Path) -> NDArray[np.float32]:
    """A photo's fingerprint for finding the same photograph at another size or JPEG quality:
    the green channel of a small thumbnail (JPEG decoded at a reduced scale), high-passed (the
    vessels and lesions; the round field of view every fundus photo shares would make any two
    alike), inside the field of view, zero-mean and unit-norm."""
    from scipy import ndimage

    with Image.open(path) as im:
        im.draft("RGB", (THUMB[0] * 4, THUMB[1] * 4))
        g = np.asarray(im.convert("RGB").resize(THUMB, Image.Resampling.BOX), np.float32)[..., 1]
    fov = ndimage.binary_erosion(g > 15, iterations=6)
    t = np.where(fov, g - ndimage.gaussian_filter(g, 3), 0.0).ravel()
    t = t - t.mean()
    return (t / (np.linalg.norm(t) + 1e-6)).astype(np.float32)


def same_photographs(photos: list[Path], references: list[Path],
                     min_corr: float = SAME_PHOTO_CORRELATION) -> dict[str, str]:
    """``{photo stem: reference stem}`` for each photo that is one of the reference photographs
    (fingerprint correlation at least ``min_corr``)."""
    if not photos or not references:
        return {}
    ref = np.stack([thumbnail(p) for p in references])
    out = {}
    for p in photos:
        corr = ref @ thumbnail(p)
        k = int(np.argmax(corr))
        if corr[k] >= min_corr:
            out[p.stem] = references[k].stem
    return out


def list_photos(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise LesionsegInputError(folder, "is not a folder of photos")
    photos = list_images(folder)
    if not photos:
        raise LesionsegInputError(folder, "holds no photo (.jpg, .png, .tif)")
    return photos


def label_from_probability(prob: NDArray[np.float32], disc: NDArray[np.bool_], lo: float,
                           hi: float) -> NDArray[np.uint8]:
    """1 where ``prob >= hi``, 0 where ``prob <= lo`` or outside the disc, 255 between."""
    y = np.full(prob.shape, 255, np.uint8)
    y[prob >= hi] = 1
    y[prob <= lo] = 0
    y[~disc] = 0
    return y


def pseudo_label(teacher: LoadedModel, photos: list[Path], out: Path, *, lo: float = 0.05, hi: float = 0.5,
                 left_out: dict[str, str] | None = None) -> Generator[dict, None, Path]:
    """Label ``photos`` with ``teacher`` into ``out`` (see the module). Yields one event per
    photo; returns ``out``. A photo already labelled by the same teacher and thresholds is kept
    (an interrupted run continues); a folder written by another teacher is refused."""
    if not 0.0 <= lo < hi <= 1.0:
        raise ValueError(f"need 0 <= lo < hi <= 1 (got lo={lo}, hi={hi})")
    pre = teacher.config.preprocess
    head = {"teacher": str(teacher.path), "teacher_version": teacher.version,
            "teacher_weights_sha256": teacher.config.weights_sha256, "lo": lo, "hi": hi,
            "tta": teacher.config.inference.tta, "preprocess": asdict(pre)}
    out.mkdir(parents=True, exist_ok=True)
    old = _read_manifest(out) if (out / MANIFEST).exists() else None
    if old is not None and {k: old.get(k) for k in head if k != "teacher"} != {k: v for k, v in head.items()
                                                                             if k != "teacher"}:
        raise LesionsegInputError(out, "holds pseudo-labels of another teacher or thresholds: choose a new --out")
    done = {ph["id"]: ph for ph in (old or {}).get("photos", [])}
    skipped = dict((old or {}).get("left_out", {}))
    skipped.update({stem: f"the same photograph as annotated {ref}" for stem, ref in (left_out or {}).items()})
    for n, path in enumerate(photos, 1):
        if path.stem in skipped:
            continue
        if path.stem not in done or not (out / f"{path.stem}.npz").exists():
            try:
                rgb, _ = read_image(path)
                x, _, disc = prepare(rgb, pre.fov_diameter, pre.green_contrast_sigma)
            except LesionsegInputError as err:
                skipped[path.stem] = f"unreadable: {err}"
                continue
            prob = run_to_end(work_probability(teacher, x, disc))
            y = label_from_probability(prob, disc, lo, hi)
            tmp = out / f".{path.stem}.tmp.npz"
            p8 = np.round(prob * 255.0).astype(np.uint8)  # 0 outside the disc, as work_probability leaves it
            np.savez(tmp, x=x.astype(np.float16), y=y, fov=disc, p=p8)
            tmp.replace(out / f"{path.stem}.npz")
            inside = max(int(disc.sum()), 1)
            done[path.stem] = {"id": path.stem, "source": str(path.resolve()),
                               "lesion": round(float(np.count_nonzero(y == 1)) / inside, 6),
                               "unsure": round(float(np.count_nonzero(y == 255)) / inside, 6)}
            _write_manifest(out, head, done, skipped)
        yield {"event": "pseudo_label", "done": n, "total": len(photos), "photo": path.stem}
    _write_manifest(out, head, done, skipped)
    return out


def _write_manifest(out: Path, head: dict, done: dict[str, dict], skipped: dict[str, str]) -> None:
    atomic_write_text(out / MANIFEST, json.dumps({**head, "photos": list(done.values()), "left_out": skipped},
                                                 indent=1))


def _read_manifest(folder: Path) -> dict:
    try:
        return json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as err:
        raise LesionsegInputError(folder / MANIFEST, f"is not a readable pseudo-label manifest ({err})") from None


def load_pseudo_labels(folder: Path, pre: PreprocessConfig, soft: bool = False) -> list[Prepared]:
    """The pseudo-labelled photos of ``folder`` as training items (``x`` stays float16 in
    memory: crops are cast when drawn); ``soft``: with the teacher's probabilities
    (``Prepared.soft``), refusing a photo labelled before they were kept. Refuses a folder
    prepared with another preprocessing than the student's (the crops would not be what the
    model sees)."""
    if not (folder / MANIFEST).exists():
        raise LesionsegInputError(folder, f"is not a pseudo-label folder (no {MANIFEST}): make one with "
                                          "python -m lesionseg_training.pseudo_labels")
    meta = _read_manifest(folder)
    if meta.get("preprocess") != asdict(pre):
        raise LesionsegInputError(folder, f"was prepared with preprocessing {meta.get('preprocess')}, the model "
                                          f"being trained uses {asdict(pre)}")
    items = []
    for ph in meta.get("photos", []):
        f = folder / f"{ph['id']}.npz"
        if not f.exists():
            raise LesionsegInputError(f, "is listed in the manifest but missing")
        z = np.load(f)
        if soft and "p" not in z.files:
            raise LesionsegInputError(f, "holds hard labels only (labelled before the teacher's probabilities were "
                                         "kept): label the photos again into a new folder for data.pseudo_soft")
        items.append(Prepared(f"pseudo:{ph['id']}", z["x"], z["y"], z["fov"], soft=z["p"] if soft else None))
    if not items:
        raise LesionsegInputError(folder, "holds no pseudo-labelled photo")
    return items


def pseudo_label_summary(folder: Path) -> dict:
    """What a model's lineage records of the pseudo-labels it trained on: the folder, the
    teacher (and its weights' sha256), the thresholds and the photos' names."""
    meta = _read_manifest(folder)
    return {"folder": str(folder), **{k: meta.get(k) for k in ("teacher", "teacher_version",
                                                                "teacher_weights_sha256", "lo", "hi", "tta")},
            "photos": [ph["id"] for ph in meta.get("photos", [])], "left_out": meta.get("left_out", {})}


def main(argv: list[str] | None = None) -> int:
    from napari_lesionseg.cli import run_command

    ap = argparse.ArgumentParser(prog="python -m lesionseg_training.pseudo_labels", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", required=True, help="model folder that labels the photos")
    ap.add_argument("--images", required=True, help="folder of unlabelled photos")
    ap.add_argument("--out", required=True, help="folder to write the pseudo-labels to")
    ap.add_argument("--not-like", action="append", default=[],
                    help="folder of annotated photos: photos that are one of them are left out (repeatable)")
    ap.add_argument("--lo", type=float, default=0.05, help="calibrated probability at or below which: background")
    ap.add_argument("--hi", type=float, default=0.5, help="calibrated probability at or above which: lesion")
    ap.add_argument("--limit", type=int, default=0, help="label only the first N photos (sorted by name)")
    args = ap.parse_args(argv)
    if not 0.0 <= args.lo < args.hi <= 1.0:
        ap.error(f"need 0 <= --lo < --hi <= 1 (got --lo {args.lo}, --hi {args.hi})")
    return run_command(_label, args)


def _label(args: argparse.Namespace) -> int:
    teacher = load_model_folder(Path(args.teacher))
    photos = list_photos(Path(args.images))
    photos = photos[:args.limit] if args.limit else photos
    refs = [p for folder in args.not_like for p in list_photos(Path(folder))]
    same = same_photographs(photos, refs)
    print(f"{len(photos)} photos, {len(same)} left out as annotated photographs", flush=True)
    out = run_to_end(pseudo_label(teacher, photos, Path(args.out), lo=args.lo, hi=args.hi, left_out=same),
                     lambda ev: print(f"{ev['done']}/{ev['total']} {ev['photo']}", flush=True)
                     if ev["done"] % 25 == 0 or ev["done"] == ev["total"] else None)
    meta = _read_manifest(out)
    unreadable = {stem: why for stem, why in meta.get("left_out", {}).items() if why.startswith("unreadable")}
    for stem, why in unreadable.items():
        print(f"left out {stem}: {why}", file=sys.stderr)
    if not meta["photos"]:
        raise LesionsegInputError(Path(args.images), f"no photo was labelled ({len(unreadable)} unreadable, "
                                                     f"{len(same)} annotated photographs left out)")
    shares = [ph["lesion"] for ph in meta["photos"]]
    unsure = [ph["unsure"] for ph in meta["photos"]]
    print(f"{len(shares)} photos labelled in {out}: lesion {np.mean(shares):.4f}, unsure {np.mean(unsure):.4f} "
          "of the disc on average" + (f"; {len(unreadable)} unreadable left out" if unreadable else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
