"""What a model predicts for annotated photos, as the calibration and the review fit read it;
and a compact file of what a fold model predicts for the photos it held out, so that a final
model can be calibrated out of fold in a later sitting without its fold models.

A fold model trains for an hour or more on these machines, and the final model's out-of-fold
calibration (:mod:`.oof_calibrate`) needs all five of a recipe's fold models at once: run
folders do not outlive a sitting, so every fold model's predictions are kept instead, in a
file small enough to commit (about 0.15 MB a photo)::

    python -m lesionseg_training.oof_predictions --fold RUN/last --images ../shared/data/idrid/train \\
        [--cache DIR] --out benchmarks/results/oof_predictions/default-f2-s4000.npz

What the fits read of a prediction, and so what is kept of it:

- the calibration (:func:`.calibrate.calibrate_pooled`) and the pixel error rate read every
  scored pixel's probability and label, not where it is: kept as counts of lesion and
  background pixels in fine logit bins (width 0.008), per output;
- the review rates read connected regions above the candidate floor (a small probability,
  0.05 of the threshold after calibration): every hemorrhage pixel above ``KEEP_ABOVE``
  (raw probability; about a quarter of the disc for the shipped model, whose floor is 0.0127
  calibrated, 2e-4 raw being 0.005) is kept where it is, as an image of its logit in steps of
  0.1, with its label.

Read back (:func:`load`), a photo is a :class:`Predicted` whose kept pixels sit where they
were and whose other scored pixels sit, in any order, elsewhere on the grid; the fits give what
they give on the photo itself, to within the bin width. A fit whose candidate floor falls below
what was kept refuses the file (:func:`check_kept`).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray

from napari_lesionseg.core.errors import LesionsegInputError
from napari_lesionseg.core.inference import apply_calibration, onto_grid
from napari_lesionseg.core.model_config import ModelConfig
from napari_lesionseg.core.pairs import Pair

from .data import Prepared
from .validate import predict_work_all

FORMAT = "lesionseg-oof-predictions/1"
KEEP_ABOVE = 2e-4  # raw hemorrhage probability above which a pixel is kept where it is
LOGIT_STEP = 0.1  # a kept pixel's logit, to the middle of its step (255 steps up from KEEP_ABOVE's: p to 1 - 5e-8)
LOGIT_LO, LOGIT_HI, LOGIT_BINS = -16.0, 16.0, 4096
_CENTRES = LOGIT_LO + (np.arange(LOGIT_BINS) + 0.5) * (LOGIT_HI - LOGIT_LO) / LOGIT_BINS


@dataclass
class Predicted:
    """One photo as the fits read it: raw probabilities ``(T, h, w)`` of the model's outputs,
    their labels ``(T, h, w)`` (1 lesion, 0 not, 255 not scored) and the disc ``(h, w)``;
    ``kept_above``: 0 for a whole prediction, else the raw hemorrhage probability at or below
    which pixels were not kept where they are (read back from a file)."""

    id: str
    probs: NDArray[np.float32]
    labels: NDArray[np.uint8]
    fov: NDArray[np.bool_]
    kept_above: float = 0.0


def on_grids(pairs: Iterable[Pair], config: ModelConfig, cache: Path | None = None
             ) -> Iterator[Prepared | tuple[Prepared, list[NDArray[np.float32]]]]:
    """Each pair prepared on the model's working grid, with its network inputs on the model's
    extra grids (``inference.extra_grids``) when it has any, for :func:`predict`."""
    from .data import prepare_pair

    grids = config.inference.extra_grids
    for pair in pairs:
        it = prepare_pair(pair, config.preprocess, cache, config.network.outputs)
        if not grids:
            yield it
        else:
            yield it, [prepare_pair(pair, replace(config.preprocess, fov_diameter=g), cache).x for g in grids]


def predict(net, config: ModelConfig, items: Iterable[Prepared | tuple[Prepared, list[NDArray[np.float32]]]]
            ) -> Iterator[Predicted]:
    """``net``'s prediction of each photo on its working grid (one pass, no TTA); for an item
    that comes with its inputs on other grids (:func:`on_grids`), the mean over the grids,
    each brought onto the model's grid as inference brings it (``core.inference.onto_grid``)."""
    n = len(config.network.outputs)
    stride = config.network.stride
    for item in items:
        it, extra = item if isinstance(item, tuple) else (item, [])
        probs = predict_work_all(net.eval(), it.x, stride)[:n]
        if extra:
            total = torch.from_numpy(probs)
            for x in extra:
                total = total + onto_grid(torch.from_numpy(predict_work_all(net, x, stride)[:n]), probs.shape[-2:])
            probs = (total / (1 + len(extra))).numpy()
        yield Predicted(it.id, probs.astype(np.float32, copy=False), it.labels().reshape((-1,) + it.y.shape)[:n],
                        np.asarray(it.fov, bool))


def predict_groups(groups: Iterable[tuple[object, Iterable[Prepared]]], config: ModelConfig) -> Iterator[Predicted]:
    """Each ``(net, items)`` group's network on its own photos (out of fold: every fold model on
    the photos it never trained on)."""
    for net, items in groups:
        yield from predict(net, config, items)


def held_out(source: Path, held: list[str] | None, trained: Iterable[str], in_sample: bool = False) -> list[str]:
    """A fold model's held-out photos (sorted), refused by name if it holds none out, or trained
    on one of them."""
    if not held or in_sample:
        raise LesionsegInputError(source, "not a fold model: metrics.json names no held-out photos "
                                          "(val_images), or they are its training photos (val_in_sample)")
    leak = set(held) & set(trained)
    if leak:
        raise LesionsegInputError(source, f"trained on photos it is said to hold out: {sorted(leak)}")
    return sorted(held)


def check_kept(predicted: Predicted, floor: float, knots: list[list[float]] | None) -> None:
    """Refuse a read-back photo whose unkept pixels could reach ``floor`` after calibration."""
    if predicted.kept_above > 0:
        reach = float(apply_calibration(np.array([predicted.kept_above], np.float32), knots)[0])
        if reach > floor:
            raise ValueError(f"{predicted.id}: its stored prediction kept the pixels above raw probability "
                             f"{predicted.kept_above:g} ({reach:.4f} calibrated), above the candidate floor "
                             f"{floor:.4f} the review fit needs; predict it again with its fold model")


def logit(p: NDArray) -> NDArray[np.float64]:
    """``log(p / (1 - p))``, ``p`` clipped to [1e-7, 1 - 1e-7]."""
    p = np.clip(np.asarray(p, np.float64), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def logit_bins(z: NDArray) -> NDArray[np.int64]:
    """Each logit's bin of the ``LOGIT_BINS`` over [``LOGIT_LO``, ``LOGIT_HI``] (width 0.008; the
    ends take what lies beyond)."""
    b = np.floor((np.asarray(z, np.float64) - LOGIT_LO) / (LOGIT_HI - LOGIT_LO) * LOGIT_BINS).astype(np.int64)
    return np.clip(b, 0, LOGIT_BINS - 1)


def pack(pred: Predicted, keep_above: float = KEEP_ABOVE) -> dict[str, NDArray]:
    """The arrays kept of one photo (see the module's docstring)."""
    t, h, w = pred.probs.shape
    scored = pred.fov[None] & (pred.labels != 255)
    he = pred.probs[0]
    kept = pred.fov & (he > keep_above)
    z0 = float(logit(np.array(keep_above))[()])
    code = np.where(kept, np.clip(np.ceil((logit(he) - z0) / LOGIT_STEP), 1, 255), 0).astype(np.uint8)
    hist = np.zeros((t, 2, LOGIT_BINS), np.int64)
    for k in range(t):
        s = scored[k] & ~kept if k == 0 else scored[k]
        b = logit_bins(logit(pred.probs[k][s]))
        pos = pred.labels[k][s] == 1
        hist[k, 0] = np.bincount(b[~pos], minlength=LOGIT_BINS)
        hist[k, 1] = np.bincount(b[pos], minlength=LOGIT_BINS)
    return {"shape": np.array([t, h, w], np.int64), "kept": code, "label": np.where(kept, pred.labels[0], 0).astype(np.uint8),
            "hist": hist.astype(np.int32), "keep_above": np.array(keep_above, np.float64)}


def _sigmoid(z: NDArray) -> NDArray[np.float32]:
    return (1.0 / (1.0 + np.exp(-np.asarray(z, np.float64)))).astype(np.float32)


def unpack(pid: str, arrays: dict[str, NDArray]) -> Predicted:
    """A photo back from :func:`pack`'s arrays (kept pixels where they were, the rest of the
    scored pixels elsewhere on the grid; unscored elsewhere)."""
    t, h, w = (int(v) for v in arrays["shape"])
    keep_above = float(arrays["keep_above"])
    code = arrays["kept"].ravel()
    kept = np.flatnonzero(code)
    probs = np.zeros((t, h * w), np.float32)
    labels = np.full((t, h * w), 255, np.uint8)
    probs[0, kept] = _sigmoid(logit(np.array(keep_above))[()] + LOGIT_STEP * (code[kept] - 0.5))
    labels[0, kept] = arrays["label"].ravel()[kept]
    centres = _sigmoid(_CENTRES)
    for k in range(t):
        free = np.flatnonzero(code == 0) if k == 0 else np.arange(h * w)
        neg, pos = arrays["hist"][k].astype(np.int64)
        n = int(neg.sum() + pos.sum())
        if n > len(free):
            raise ValueError(f"{pid}: more scored pixels ({n}) than its grid holds")
        at = free[:n]
        probs[k, at] = np.concatenate([np.repeat(centres, neg), np.repeat(centres, pos)])
        labels[k, at] = np.concatenate([np.zeros(int(neg.sum()), np.uint8), np.ones(int(pos.sum()), np.uint8)])
    return Predicted(pid, probs.reshape(t, h, w), labels.reshape(t, h, w), np.ones((h, w), bool), keep_above)


def recipe_io(config: ModelConfig) -> dict:
    """What a final model and its fold models must share for the folds to stand for it."""
    from napari_lesionseg.core.dataclass_io import to_dict

    net = config.network
    return {"outputs": list(net.outputs), "stride": net.stride, "arch": net.arch, "preprocess": to_dict(config.preprocess)}


def save(path: Path, predicted: Iterable[Predicted], meta: dict) -> list[str]:
    """Write the photos to ``path`` (a new ``.npz``; written whole or not at all); their ids."""
    arrays: dict[str, NDArray] = {}
    ids = []
    for pred in predicted:
        ids.append(pred.id)
        arrays.update({f"{pred.id}/{k}": v for k, v in pack(pred).items()})
    head = {"format": FORMAT, **meta, "photos": ids}
    arrays["meta"] = np.frombuffer(json.dumps(head).encode(), np.uint8)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)
    return ids


def load_meta(path: Path) -> dict:
    """The file's description (fold model, recipe, held-out and training photos)."""
    try:
        with np.load(path) as z:
            meta = json.loads(bytes(z["meta"]).decode())
    except (OSError, ValueError, KeyError) as err:
        raise LesionsegInputError(path, f"not a stored-predictions file ({err})") from None
    if meta.get("format") != FORMAT:
        raise LesionsegInputError(path, f"not a stored-predictions file of format {FORMAT}")
    return meta


def load(path: Path, ids: Iterable[str] | None = None) -> Iterator[Predicted]:
    """The stored photos (those of ``ids`` only, if given), one at a time."""
    meta = load_meta(path)
    want = set(meta["photos"] if ids is None else ids)
    with np.load(path) as z:
        for pid in meta["photos"]:
            if pid in want:
                yield unpack(pid, {k: z[f"{pid}/{k}"] for k in ("shape", "kept", "label", "hist", "keep_above")})


def store_fold(folder: Path, pairs: Iterable[Pair], out: Path, cache: Path | None = None, note: str = "",
               extra_grids: list[int] | None = None) -> list[str]:
    """Write what the fold model in ``folder`` predicts for its held-out photos (found among
    ``pairs``) to ``out`` (a new file); their ids. ``extra_grids``: predict on these grids too
    (None: the model's own ``inference.extra_grids``); the file says which. Refuses by name a
    folder that is not a fold model and photos that lack one it held out."""
    from napari_lesionseg.core.model_folder import load_model_folder

    if out.exists():
        raise LesionsegInputError(out, "already exists; choose a new file (nothing was written)")
    fold = load_model_folder(folder)
    trained = sorted(fold.lineage.get("data", {}))
    held = held_out(Path(folder), fold.metrics.get("val_images"), trained, bool(fold.metrics.get("val_in_sample")))
    by_id = {p.id: p for p in pairs}
    missing = [pid for pid in held if pid not in by_id]
    if missing:
        raise LesionsegInputError(Path(folder), f"its held-out photos {missing} are not among the photos given")
    config = fold.config if extra_grids is None else fold.config.with_extra_grids(extra_grids)
    meta = {"fold_model": str(folder), "note": note, "step": fold.metrics.get("step"),
            "recipe_io": recipe_io(config), "held_out": held, "trained": trained,
            "extra_grids": config.inference.extra_grids}
    out.parent.mkdir(parents=True, exist_ok=True)
    return save(out, predict(fold.net, config, on_grids((by_id[pid] for pid in held), config, cache)), meta)


def parse_grids(text: str | None) -> list[int] | None:
    """``--extra-grids``: ``"704,1024"`` -> [704, 1024]; ``""`` -> [] (the model's grid only);
    None stays None (the model's own); a bad list is a ``LesionsegInputError`` that says what is wrong."""
    from napari_lesionseg.core.dataclass_io import ConfigError
    from napari_lesionseg.core.model_config import parse_grids as parse

    if text is None:
        return None
    try:
        return parse(text)
    except ConfigError as err:
        raise LesionsegInputError(None, f"--extra-grids: {err}") from None


def main(argv: list[str] | None = None) -> int:
    from napari_lesionseg.cli import run_command

    ap = argparse.ArgumentParser(prog="python -m lesionseg_training.oof_predictions", description=__doc__.split("\n\n")[0])
    ap.add_argument("--fold", type=Path, required=True, help="the fold model's folder (RUN/last)")
    ap.add_argument("--images", required=True, help="IDRiD-layout root, or an images folder (with --masks)")
    ap.add_argument("--masks", default=None)
    ap.add_argument("--cache", type=Path, default=None, help="prepared-data cache folder")
    ap.add_argument("--note", default="", help="what the fold model is (recipe, steps, machine)")
    ap.add_argument("--out", type=Path, required=True, help="the new .npz (must not exist)")
    ap.add_argument("--extra-grids", default=None, metavar="PX,PX",
                    help="predict on these working grids too, averaged (default: the model's inference.extra_grids)")
    return run_command(_store, ap.parse_args(argv))


def _store(args: argparse.Namespace) -> int:
    from .data import find_pairs
    from .train_config import DataConfig

    ids = store_fold(args.fold, find_pairs(DataConfig(images=args.images, masks=args.masks)), args.out,
                     args.cache, args.note, parse_grids(args.extra_grids))
    print(f"{len(ids)} held-out photos of {args.fold} -> {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
