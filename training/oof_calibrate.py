"""Out-of-fold calibration of a final model: its probability calibration, threshold, fuzzy-map
error rate and review rates fitted on what the cross-validation's fold models predict for the
photos each of them never trained on.

A final model (``lesionseg train --final``) has no photos it did not train on to fit these on;
fitted on its own training photos they describe a model that has seen the answer (confident and
right), not the same model on a new photo. The fold models share its recipe and each held out a
fifth of the photos: pooled, their predictions on those photos are how the recipe behaves on
photos it never saw. Every photo the final model trained on counts once, predicted by the fold
model that held it out; a photo the final model did not train on (kept aside to test it) is
not counted, so it stays unseen by everything fitted into the folder::

    python -m lesionseg_training.oof_calibrate --model runs/final/best \\
        --folds /tmp/cv/runs/default-f{0,1,2,3,4}-s2000/last --images ../shared/data/idrid/train \\
        [--cache DIR] --out runs/final/oof_calibrated

The fold models' folders must be the trainer's (``metrics.json`` ``val_images``: the photos
they held out; ``lineage.json``: the photos they trained on), of the final model's network,
preprocessing and outputs. The new folder keeps the final model's weights, lineage and replay
photos; ``metrics.json`` says what was fitted where (``calibration.fitted_on``).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from napari_lesionseg.core.errors import LesionsegInputError
from napari_lesionseg.core.model_folder import LoadedModel, load_model_folder, save_model_folder
from napari_lesionseg.core.pairs import Pair

from .calibrate import calibrate_pooled
from .data import Prepared, find_pairs, prepare_pair
from .fit_review import fit_review_pooled
from .train_config import DataConfig

MIN_PHOTOS = 10  # fewer out-of-fold photos than this fit nothing


@dataclass
class FoldGroup:
    """One fold model and the final model's training photos it held out."""

    folder: Path
    model: LoadedModel
    pairs: list[Pair]


def _same_recipe_io(final: LoadedModel, fold: LoadedModel, folder: Path) -> None:
    a, b = final.config, fold.config
    for what, x, y in (("network.outputs", a.network.outputs, b.network.outputs),
                       ("network.stride", a.network.stride, b.network.stride),
                       ("network.arch", a.network.arch, b.network.arch),
                       ("preprocess", a.preprocess, b.preprocess)):
        if x != y:
            raise LesionsegInputError(folder, f"a fold model with another {what} than the final model ({y} vs {x})")


def fold_groups(final: LoadedModel, folders: list[Path], pairs: list[Pair]) -> list[FoldGroup]:
    """Each fold model with the photos it held out that the final model trained on; checks
    that no photo is held out twice and that no fold model trained on a photo it is to predict."""
    trained = set(final.lineage.get("data", {}))
    if not trained:
        raise LesionsegInputError(Path(final.path), "lineage.json names no training photos: which photos "
                                                      "the model trained on cannot be told")
    by_id = {p.id: p for p in pairs}
    groups, seen = [], {}
    for folder in folders:
        fold = load_model_folder(folder)
        _same_recipe_io(final, fold, folder)
        held = fold.metrics.get("val_images")
        if not held or fold.metrics.get("val_in_sample"):
            raise LesionsegInputError(folder, "not a fold model: metrics.json names no held-out photos "
                                              "(val_images), or they are its training photos (val_in_sample)")
        leak = set(held) & set(fold.lineage.get("data", {}))
        if leak:
            raise LesionsegInputError(folder, f"trained on photos it is said to hold out: {sorted(leak)}")
        for pid in held:
            if pid in seen:
                raise LesionsegInputError(folder, f"{pid} is also held out by {seen[pid]}: folds must not overlap")
            seen[pid] = folder
        mine = [by_id[pid] for pid in sorted(held) if pid in trained and pid in by_id]
        groups.append(FoldGroup(Path(folder), fold, mine))
    return groups


def _prepared(groups: list[FoldGroup], final: LoadedModel, cache: Path | None
              ) -> Iterator[tuple[object, Iterator[Prepared]]]:
    outputs = final.config.network.outputs
    for g in groups:
        yield g.model.net, (prepare_pair(p, final.config.preprocess, cache, outputs) for p in g.pairs)


def calibrate_out_of_fold(final: LoadedModel, groups: list[FoldGroup], cache: Path | None = None
                          ) -> tuple[object, dict, dict]:
    """``(config, calibration figures, review figures)``: the final model's config with the
    calibration, thresholds, error rate and review rates fitted on the groups' photos."""
    n = sum(len(g.pairs) for g in groups)
    if n < MIN_PHOTOS:
        raise LesionsegInputError(Path(final.path), f"only {n} of its training photos are held out by the fold "
                                                      f"models given; at least {MIN_PHOTOS} are needed")
    config, figures = calibrate_pooled(final.config, _prepared(groups, final, cache))
    config, review = fit_review_pooled(config, _prepared(groups, final, cache))
    return config, figures, review


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lesionseg_training.oof_calibrate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, required=True, help="the final model folder (e.g. RUN/best of --final)")
    ap.add_argument("--folds", type=Path, nargs="+", required=True, help="the fold models' folders (RUN/last)")
    ap.add_argument("--images", required=True, help="IDRiD-layout root, or an images folder (with --masks)")
    ap.add_argument("--masks", default=None)
    ap.add_argument("--cache", type=Path, default=None, help="prepared-data cache folder")
    ap.add_argument("--out", type=Path, required=True, help="the new model folder (must not exist)")
    args = ap.parse_args(argv)
    if args.out.exists():
        raise SystemExit(f"{args.out}: already exists; choose a new folder (nothing was written)")
    try:
        final = load_model_folder(args.model)
        groups = fold_groups(final, args.folds, find_pairs(DataConfig(images=args.images, masks=args.masks)))
        config, figures, review = calibrate_out_of_fold(final, groups, args.cache)
    except LesionsegInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    photos = sorted(p.id for g in groups for p in g.pairs)
    source = {"fitted_on": "out_of_fold", "photos": photos,
              "fold_models": {str(g.folder): [p.id for p in g.pairs] for g in groups}}
    metrics = {**final.metrics, "calibration": {**figures, **source},
               "review_fit": {**review, "fitted_on": "out_of_fold", "photos": len(photos)}}
    replay = Path(final.path) / "replay"

    def copy_replay(tmp: Path) -> None:
        if replay.is_dir():
            shutil.copytree(replay, tmp / "replay")

    save_model_folder(args.out, final.net, config, metrics, final.lineage, fill_more=copy_replay)
    print(f"fitted on {len(photos)} photos, each predicted by the fold model that held it out -> {args.out}")
    for k in ("threshold", "platt_a", "platt_b", "val_best_dice_calibrated"):
        if k in figures:
            print(f"  {k:28s} {figures[k]:.4f}")
    for k, v in review.items():
        print(f"  {k:28s} {v:.4f}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
