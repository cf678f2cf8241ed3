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

or, from what the fold models predicted in earlier sittings (``oof_predictions`` files; a
fold model's run folder need not outlive its sitting)::

    python -m lesionseg_training.oof_calibrate --model runs/final/best \\
        --predictions benchmarks/results/oof_predictions/default-f{0,1,2,3,4}-s4000.npz \\
        --out runs/final/oof_calibrated

The fold models' folders must be the trainer's (``metrics.json`` ``val_images``: the photos
they held out; ``lineage.json``: the photos they trained on), of the final model's network,
preprocessing and outputs. The new folder keeps the final model's weights, lineage and replay
photos; ``metrics.json`` says what was fitted where (``calibration.fitted_on``).
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from napari_lesionseg.core.errors import LesionsegInputError
from napari_lesionseg.core.model_folder import LoadedModel, load_model_folder, save_model_folder
from napari_lesionseg.core.pairs import Pair

from .calibrate import calibrate_pooled
from .data import find_pairs
from .fit_review import fit_review_pooled
from .oof_predictions import Predicted, held_out, load, load_meta, on_grids, parse_grids, predict, recipe_io
from .train_config import DataConfig

MIN_PHOTOS = 10  # fewer out-of-fold photos than this fit nothing


@dataclass
class FoldGroup:
    """One fold (a fold model's folder, or a file of its stored predictions) and the final
    model's training photos it held out."""

    source: Path
    ids: list[str]
    model: LoadedModel | None = None
    pairs: tuple[Pair, ...] = ()  # with a model: the photos' files


def _same_recipe_io(final: LoadedModel, fold_io: dict, source: Path) -> None:
    mine = recipe_io(final.config)
    for what in ("outputs", "stride", "arch", "preprocess"):
        if fold_io.get(what) != mine[what]:
            name = what if what == "preprocess" else f"network.{what}"
            raise LesionsegInputError(source, f"a fold model with another {name} than the final model "
                                              f"({fold_io.get(what)} vs {mine[what]})")


def _group(final: LoadedModel, source: Path, held: list[str] | None, trained: set[str], available: set[str],
           seen: dict[str, Path], in_sample: bool = False) -> list[str]:
    held = held_out(source, held, trained, in_sample)
    for pid in held:
        if pid in seen:
            raise LesionsegInputError(source, f"{pid} is also held out by {seen[pid]}: folds must not overlap")
        seen[pid] = source
    final_trained = set(final.lineage.get("data", {}))
    return [pid for pid in held if pid in final_trained and pid in available]


def _final_trained(final: LoadedModel) -> None:
    if not final.lineage.get("data"):
        raise LesionsegInputError(Path(final.path), "lineage.json names no training photos: which photos "
                                                      "the model trained on cannot be told")


def fold_groups(final: LoadedModel, folders: list[Path], pairs: list[Pair]) -> list[FoldGroup]:
    """Each fold model with the photos it held out that the final model trained on; checks
    that no photo is held out twice and that no fold model trained on a photo it is to predict."""
    _final_trained(final)
    by_id = {p.id: p for p in pairs}
    groups, seen = [], {}
    for folder in folders:
        fold = load_model_folder(folder)
        _same_recipe_io(final, recipe_io(fold.config), Path(folder))
        mine = _group(final, Path(folder), fold.metrics.get("val_images"), set(fold.lineage.get("data", {})),
                      set(by_id), seen, bool(fold.metrics.get("val_in_sample")))
        groups.append(FoldGroup(Path(folder), mine, fold, tuple(by_id[pid] for pid in mine)))
    return groups


def stored_groups(final: LoadedModel, files: list[Path]) -> list[FoldGroup]:
    """:func:`fold_groups` for fold models' stored predictions (``oof_predictions`` files)."""
    _final_trained(final)
    groups, seen = [], {}
    for f in files:
        meta = load_meta(Path(f))
        _same_recipe_io(final, meta.get("recipe_io", {}), Path(f))
        grids = meta.get("extra_grids", [])
        if grids != final.config.inference.extra_grids:
            raise LesionsegInputError(Path(f), f"predicted on the extra grids {grids}, the final model runs "
                                               f"{final.config.inference.extra_grids}: store them again with "
                                               "oof_predictions --extra-grids, or give the final model's")
        mine = _group(final, Path(f), meta.get("held_out"), set(meta.get("trained", [])), set(meta["photos"]), seen)
        groups.append(FoldGroup(Path(f), mine))
    return groups


def predicted(groups: list[FoldGroup], final: LoadedModel, cache: Path | None) -> Iterator[Predicted]:
    """Every group's photos as its fold model predicts them (or as it predicted them, stored)."""
    for g in groups:
        if g.model is None:
            yield from load(g.source, g.ids)
        else:
            yield from predict(g.model.net, final.config, on_grids(g.pairs, final.config, cache))


def calibrate_out_of_fold(final: LoadedModel, groups: list[FoldGroup], cache: Path | None = None
                          ) -> tuple[object, dict, dict]:
    """``(config, calibration figures, review figures)``: the final model's config with the
    calibration, thresholds, error rate and review rates fitted on the groups' photos (each
    predicted once)."""
    n = sum(len(g.ids) for g in groups)
    if n < MIN_PHOTOS:
        raise LesionsegInputError(Path(final.path), f"only {n} of its training photos are held out by the fold "
                                                      f"models given; at least {MIN_PHOTOS} are needed")
    photos = list(predicted(groups, final, cache))
    config, figures = calibrate_pooled(final.config, photos)
    try:
        config, review = fit_review_pooled(config, photos)
    except ValueError as err:
        raise LesionsegInputError(Path(final.path), str(err)) from None
    return config, figures, review


def main(argv: list[str] | None = None) -> int:
    from napari_lesionseg.cli import run_command

    ap = argparse.ArgumentParser(prog="python -m lesionseg_training.oof_calibrate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, required=True, help="the final model folder (e.g. RUN/best of --final)")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--folds", type=Path, nargs="+", help="the fold models' folders (RUN/last)")
    src.add_argument("--predictions", type=Path, nargs="+",
                     help="instead: the fold models' stored predictions (python -m lesionseg_training.oof_predictions)")
    ap.add_argument("--images", help="IDRiD-layout root, or an images folder (with --masks)")
    ap.add_argument("--masks", default=None)
    ap.add_argument("--cache", type=Path, default=None, help="prepared-data cache folder")
    ap.add_argument("--out", type=Path, required=True, help="the new model folder (must not exist)")
    ap.add_argument("--extra-grids", default=None, metavar="PX,PX",
                    help="the new folder runs these working grids too, averaged (inference.extra_grids), and is "
                         "calibrated on the folds' predictions on them (default: the final model's own)")
    args = ap.parse_args(argv)
    if args.folds and not args.images:
        ap.error("--folds needs --images (the photos the fold models predict)")
    return run_command(_calibrate_folder, args)


def _calibrate_folder(args: argparse.Namespace) -> int:
    if args.out.exists():
        raise LesionsegInputError(args.out, "already exists; choose a new folder (nothing was written)")
    final = load_model_folder(args.model)
    grids = parse_grids(args.extra_grids)
    if grids is not None:
        final = final.with_extra_grids(grids)
    if args.folds:
        groups = fold_groups(final, args.folds, find_pairs(DataConfig(images=args.images, masks=args.masks)))
    else:
        groups = stored_groups(final, args.predictions)
    config, figures, review = calibrate_out_of_fold(final, groups, args.cache)
    photos = sorted(pid for g in groups for pid in g.ids)
    source = {"fitted_on": "out_of_fold", "photos": photos,
              "fold_models": {str(g.source): g.ids for g in groups}}
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
