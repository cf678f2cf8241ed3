"""Benchmark: would two fold models, averaged, segment a fold's photos better than either alone,
and better than the first one with a second TTA view at the same cost?

Each run's ``oof/`` model (``compare_presets.py --full-res``: its last model, calibrated on
training photos only) predicts every photo of its fold at full resolution through the shipped
inference path; the 8-bit probabilities (as the PNG a user gets) are pooled over the folds into
one precision-recall curve per model, one for the models' pixel-wise mean and, with
``--baseline-tta``, one for the first model alone with that TTA (two models with one view each
cost what one model with two views costs). Dice (dataset and per image): each model's mask as
it writes it; the mean's mask at the mean of the models' thresholds (fitted on their training
photos, nothing fitted on the scored ones). Refuses a model whose folder does not list its
fold's photos as never trained on.

    python benchmarks/ensemble_oof.py --fold 0 --runs RUN_A RUN_B [--tta none] [--out JSON]
    python benchmarks/ensemble_oof.py --runs-dir /work/cv/runs --variants default_cameras,multi_he_crops \\
        --steps 4000 --folds 0,1,2,3,4 --tta none --baseline-tta hflip [--out JSON]

Reads ``../shared/data`` (the folds' photos); prints a table and writes JSON
(``results/ensemble_oof_f<folds>.json`` unless ``--out``).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import compare_presets as cp
import numpy as np
from numpy.typing import NDArray

from napari_lesionseg.core.jsonfile import json_text

HERE = Path(__file__).resolve().parent


def as_png(p: NDArray) -> NDArray[np.float32]:
    """A probability as the 8-bit PNG a user gets holds it."""
    from napari_lesionseg.core.outputs import as_written

    return as_written(p, 8)


def fold_runs(args: argparse.Namespace) -> dict[int, list[Path]]:
    if args.runs:
        if args.fold is None:
            raise SystemExit("--runs needs --fold")
        return {args.fold: [Path(r) for r in args.runs]}
    folds = [int(f) for f in args.folds.split(",")]
    return {k: [args.runs_dir / f"{v}-f{k}-s{args.steps}" for v in args.variants.split(",")] for k in folds}


def main() -> None:
    import torch

    from napari_lesionseg.core.image_io import read_image
    from napari_lesionseg.core.inference import predict, run_to_end
    from napari_lesionseg.core.lesions import labelled_mask
    from napari_lesionseg.core.metrics import DatasetScores, pool_scores
    from napari_lesionseg.core.model_folder import load_model_folder

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fold", type=int, help="with --runs: the runs' fold")
    ap.add_argument("--runs", nargs="+", help="compare_presets run folders (each with oof/) of one fold")
    ap.add_argument("--runs-dir", type=Path, help="with --variants: where <variant>-f<fold>-s<steps> runs are")
    ap.add_argument("--variants", help="comma-separated, e.g. default_cameras,multi_he_crops")
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--folds", default="0")
    ap.add_argument("--tta", choices=["none", "hflip", "flips"], help="every model's TTA (default: its own)")
    ap.add_argument("--baseline-tta", choices=["none", "hflip", "flips"],
                    help="also score the first model alone with this TTA")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(len(os.sched_getaffinity(0)))

    plan = fold_runs(args)
    names = [r.name.rsplit("-f", 1)[0] if args.variants else r.name for r in next(iter(plan.values()))]
    keys = [*names, "mean"] + (["baseline"] if args.baseline_tta else [])
    parts: dict[str, list[DatasetScores]] = {k: [] for k in keys}
    started = time.time()
    for fold, runs in plan.items():
        pairs = cp._fold_pairs(cp.DATA, fold)
        models = [load_model_folder(r / "oof") for r in runs]
        for run, model in zip(runs, models):
            if not {p.id for p in pairs} <= set(model.unseen_photos or []):
                raise SystemExit(f"{run}/oof: not a model of fold {fold} (its unseen photos do not include the fold's)")
        thr_mean = float(np.mean([m.config.inference.threshold for m in models]))
        min_area = models[0].config.inference.min_lesion_area
        scores = {k: DatasetScores(threshold=thr_mean if k == "mean" else float("nan")) for k in keys}
        for pair in pairs:
            rgb, _ = read_image(pair.image)
            gt = pair.read_mask(shape=rgb.shape[:2])
            g, valid = gt == 1, gt != 255
            probs = []
            for name, model in zip(names, models):
                pred = run_to_end(predict(model, rgb, tta=args.tta, types=[]))
                probs.append(as_png(pred.probability))
                scores[name].add(pair.id, probs[-1], g, valid, with_hd95=False, mask=pred.mask)
            mean = np.mean(probs, axis=0)
            scores["mean"].add(pair.id, mean, g, valid, with_hd95=False,
                               mask=labelled_mask(mean, thr_mean, min_area)[0])
            if args.baseline_tta:
                pred = run_to_end(predict(models[0], rgb, tta=args.baseline_tta, types=[]))
                scores["baseline"].add(pair.id, as_png(pred.probability), g, valid, with_hd95=False, mask=pred.mask)
            print(f"fold {fold} {pair.id} done ({time.time() - started:.0f} s)", flush=True)
        for k in keys:
            parts[k].append(scores[k])
    rows = {}
    for k in keys:
        s = pool_scores(parts[k]).summary()
        per_fold = [p.summary()["aupr"] for p in parts[k]]
        rows[k] = {"aupr": s["aupr"], "aupr_per_fold": per_fold, "dice_ds": s["dice_ds"], "dice_img": s["dice_img"],
                   "per_image": [r for p in parts[k] for r in p.per_image]}
    label = {k: k for k in keys} | {"mean": "mean of the models", "baseline": f"{names[0]}, TTA {args.baseline_tta}"}
    n = sum(len(p.per_image) for p in parts[keys[0]])
    print(f"\nfolds {','.join(map(str, plan))}, {n} photos, hemorrhages at full resolution, "
          f"TTA {args.tta or 'each model its own'}")
    print(f"| {'':40s} | pooled AUPR | AUPR per fold | Dice (dataset) | Dice (per image) |")
    print(f"|{'-' * 42}|---|---|---|---|")
    for k in keys:
        r = rows[k]
        print(f"| {label[k]:40s} | {r['aupr']:.3f} | {' / '.join(f'{a:.3f}' for a in r['aupr_per_fold'])} "
              f"| {r['dice_ds']:.3f} | {r['dice_img']:.3f} |")
    paired = {}
    if args.baseline_tta:
        from oof_report import paired_difference

        for k in ("mean", *names[1:]):
            paired[k] = paired_difference(rows["baseline"]["per_image"], rows[k]["per_image"])
            d = paired[k]
            print(f"{label[k]} minus {label['baseline']}: dataset Dice {d['dice_ds']['difference']:+.3f} "
                  f"[{d['dice_ds']['ci95'][0]:+.3f}, {d['dice_ds']['ci95'][1]:+.3f}], per image "
                  f"{d['dice_img']['difference']:+.3f} [{d['dice_img']['ci95'][0]:+.3f}, {d['dice_img']['ci95'][1]:+.3f}], "
                  f"better on {d['photos_b_better_dice']} of {d['photos']} photos")
    tag = "".join(map(str, plan))
    out = args.out or HERE / "results" / f"ensemble_oof_f{tag}.json"
    out.write_text(json_text({"date": time.strftime("%Y-%m-%d %H:%M"), "folds": list(plan),
                               "runs": {str(k): [r.name for r in v] for k, v in plan.items()},
                               "tta": args.tta, "baseline_tta": args.baseline_tta,
                               "threshold_of_mean": "mean of the models' thresholds", "scores": rows, "paired_vs_baseline": paired,
                               "wall_s": round(time.time() - started)}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
