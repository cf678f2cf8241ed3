"""A model's replay photos: a few of its own training photos, kept in its folder on the
working grid, that a fine-tune mixes into its crops so the model does not forget the photos
it was trained on while it learns a clinic's corrections (benchmarks/adapt.py measures it).

```
<model folder>/replay/<id>.png        the working image (disc box at the model's resolution), lossless:
                                      JPEG even at quality 95 moved the blue and green-contrast
                                      inputs by 0.26 and 0.12 of their standard deviation
<model folder>/replay/<id>_label.png  0 background, 1 lesion, 255 unsure, on the same grid
<model folder>/replay/<id>_<T>_label.png  a model with other outputs (MA, EX, SE, OD): that type's
                                      labels, for each type the photo's annotation knows (none:
                                      the type is unknown there, and a fine-tune leaves it alone)
<model folder>/replay/<id>_disc.png   the field of view on the same grid (0/255)
```
About 0.6 MB a photo. The other types' labels let the replay guard every output of a
five-output model, not its hemorrhages only. A fine-tuned version carries its parent's set forward. Add a set to a
model folder with ``python -m lesionseg_training.replay --model DIR --images ROOT``.
"""

from __future__ import annotations

import argparse
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from napari_lesionseg.core.errors import LesionsegInputError
from napari_lesionseg.core.fov import detect_fov
from napari_lesionseg.core.image_io import read_gray_u8, read_image, read_label, write_label
from napari_lesionseg.core.lesion_types import HE, OUTPUT_TYPES
from napari_lesionseg.core.model_config import PreprocessConfig
from napari_lesionseg.core.pairs import Pair, marks_a_lesion
from napari_lesionseg.core.preprocess import mask_to_work, network_input, plan_geometry, to_work

from .data import Prepared

REPLAY = "replay"
README = "README.md"  # the replay photos' source and licence, kept and carried with them
MAX_REPLAY_PHOTOS = 64
_ID = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


def _type_file(iid: str, name: str) -> str:
    return f"{iid}_label.png" if name == HE else f"{iid}_{name}_label.png"


def write_replay(model_dir: str | Path, pairs: list[Pair], pre: PreprocessConfig,
                 outputs: list[str] | tuple[str, ...] = (HE,)) -> Path:
    """Write ``pairs`` (photo + mask, and the labels of ``outputs`` beyond HE where a photo's
    annotation knows them) as ``model_dir/replay/``, replacing a set already there."""
    folder = Path(model_dir)
    if not (folder / "config.json").exists():
        raise LesionsegInputError(folder, "is not a model folder (no config.json)")
    tmp = Path(tempfile.mkdtemp(prefix=".replay.", dir=folder))
    try:
        for p in pairs:
            if not _ID.match(p.id):
                raise LesionsegInputError(p.image, "photo name unusable as a replay id")
            rgb, _ = read_image(p.image)
            geom = plan_geometry(rgb.shape[:2], detect_fov(rgb), pre.fov_diameter)
            Image.fromarray(to_work(rgb, geom)).save(tmp / f"{p.id}.png", optimize=True)
            labels = p.read_types(list(dict.fromkeys([HE, *outputs])), rgb.shape[:2])
            for name, lab in labels.items():
                if lab is not None:
                    write_label(tmp / _type_file(p.id, name), mask_to_work(lab, geom))
            Image.fromarray(geom.work_fov_mask().astype(np.uint8) * 255).save(tmp / f"{p.id}_disc.png")
        old = folder / REPLAY
        if (old / README).is_file():  # the photos' attribution stays with them
            shutil.copyfile(old / README, tmp / README)
        if old.exists():
            shutil.rmtree(old)
        tmp.replace(old)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder / REPLAY


def pick_replay(with_lesions: list[Pair], n: int) -> list[Pair]:
    """``n`` of the training pairs that hold lesions, spread evenly over them."""
    return with_lesions[::max(1, len(with_lesions) // n)][:n]


def replay_ids(model_dir: str | Path) -> list[str]:
    """The ids of the replay photos in a model folder (none: [])."""
    folder = Path(model_dir) / REPLAY
    if not folder.is_dir() or folder.is_symlink():
        return []
    return sorted(f.stem for f in folder.glob("*.png") if _ID.match(f.stem) and not f.is_symlink()
                  and not f.stem.endswith(("_label", "_disc")))


def load_replay(model_dir: str | Path, pre: PreprocessConfig,
                outputs: list[str] | tuple[str, ...] = (HE,)) -> list[Prepared]:
    """The replay photos as training items for a model with preprocessing ``pre`` and
    ``outputs`` (a type without a label file is unknown on that photo: 255)."""
    folder = Path(model_dir) / REPLAY
    ids = replay_ids(model_dir)[:MAX_REPLAY_PHOTOS]
    items = []
    for iid in ids:
        work, _ = read_image(folder / f"{iid}.png")
        label = read_label(folder / f"{iid}_label.png", shape=work.shape[:2])
        disc = read_gray_u8(folder / f"{iid}_disc.png") > 127
        if disc.shape != work.shape[:2]:
            raise LesionsegInputError(folder / f"{iid}_disc.png", "replay disc does not match its photo")
        aux = None
        if len(outputs) > 1:
            aux = np.stack([read_label(folder / _type_file(iid, t), shape=work.shape[:2])
                            if (folder / _type_file(iid, t)).is_file() else np.full(work.shape[:2], 255, np.uint8)
                            for t in outputs[1:]])
        items.append(Prepared(iid, network_input(work, disc, pre.green_contrast_sigma), label, disc, aux))
    return items


def copy_replay(src_model: str | Path, dst_folder: Path) -> None:
    """Carry a parent's replay set into a new model folder being written (``dst_folder``)."""
    ids = replay_ids(src_model)
    if not ids:
        return
    (dst_folder / REPLAY).mkdir()
    for iid in ids:
        for name in (f"{iid}.png", f"{iid}_disc.png", *(_type_file(iid, t) for t in OUTPUT_TYPES)):
            if name == _type_file(iid, HE) or (Path(src_model) / REPLAY / name).is_file():
                shutil.copyfile(Path(src_model) / REPLAY / name, dst_folder / REPLAY / name)
    if (Path(src_model) / REPLAY / README).is_file():
        shutil.copyfile(Path(src_model) / REPLAY / README, dst_folder / REPLAY / README)


def guard_crops(items: list[Prepared], size: int = 256, per_photo: int = 3, seed: int = 0) -> list[Prepared]:
    """Fixed ``size`` x ``size`` crops of replay photos for a fine-tune's forgetting guard: per
    photo ``per_photo`` crops, centred on hemorrhage pixels where it has some, else anywhere in
    its disc; the same crops for the same photos and ``seed`` (cheap to score at every
    validation, unlike whole photos)."""
    rng = np.random.default_rng(seed)
    out = []
    for it in items:
        h, w = it.y.shape
        lesions, disc = np.flatnonzero(it.y == 1), np.flatnonzero(it.fov)
        for _ in range(per_photo):
            pool = lesions if lesions.size else disc
            if not pool.size:
                break
            cy, cx = divmod(int(pool[rng.integers(pool.size)]), w)
            y0 = int(np.clip(cy - size // 2, 0, max(0, h - size)))
            x0 = int(np.clip(cx - size // 2, 0, max(0, w - size)))
            win = (slice(y0, y0 + size), slice(x0, x0 + size))
            out.append(Prepared(f"{it.id}@{y0},{x0}", np.ascontiguousarray(it.x[(slice(None), *win)]),
                                it.y[win].copy(), it.fov[win].copy(),
                                None if it.aux is None else it.aux[(slice(None), *win)].copy()))
    return out


def main(argv: list[str] | None = None) -> int:
    from napari_lesionseg.cli import run_command

    ap = argparse.ArgumentParser(prog="python -m lesionseg_training.replay", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, required=True, help="model folder to add the replay photos to")
    ap.add_argument("--images", required=True, help="IDRiD-layout root, or an images folder (with --masks)")
    ap.add_argument("--masks", default=None)
    ap.add_argument("--n", type=int, default=8, help="how many photos (spread evenly over the training photos)")
    return run_command(_add_replay, ap.parse_args(argv))


def _add_replay(args: argparse.Namespace) -> int:
    from napari_lesionseg.core.model_folder import load_model_folder

    from .data import find_pairs
    from .train_config import DataConfig

    model = load_model_folder(args.model)
    trained_on = list(model.lineage.get("data", {}))
    pairs = [p for p in find_pairs(DataConfig(images=args.images, masks=args.masks))
             if not trained_on or p.id in trained_on]  # never a photo the model was validated on
    with_lesions = [p for p in pairs if marks_a_lesion(p, (HE,))]
    if not with_lesions:
        raise LesionsegInputError(Path(args.images), "no photo with lesions among the model's training photos")
    pick = pick_replay(with_lesions, args.n)
    out = write_replay(args.model, pick, model.config.preprocess, model.config.network.outputs)
    print(f"{len(pick)} replay photos in {out}: {', '.join(p.id for p in pick)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
