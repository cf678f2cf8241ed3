"""Benchmark: does a per-lesion filter help, out of fold? Each fold's model (the ``oof/`` model
of a ``compare_presets.py --full-res`` run, calibrated on its training photos) predicts its
own fold's photos at full resolution (the shipped path, 8-bit probabilities); the mask's
lesions (8-connected components of ``p > threshold``) are then kept only if their highest
probability reaches ``t_high`` (hysteresis thresholding) and their area ``min_area`` px.
The rule is **cross-fitted**: for each fold it is chosen on the other folds' photos (by the
mean of dataset and per-image Dice) and scored on its own, so no photo both chooses and
reports. Prints a table and writes JSON.

    python benchmarks/lesion_filter.py --runs /tmp/cv/runs --variants default,multi_he_crops --folds 0,1 \\
        [--steps 1000] [--cache /tmp/cv/lesion_stats] [--out benchmarks/results/lesion_filter.json]

Per photo only the components' statistics are kept (``--cache``), so the rule grid is scored
without predicting again. Reads ``../shared/data`` (the folds' photos and masks).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from napari_lesionseg.core.jsonfile import json_text

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import compare_presets as cp  # noqa: E402
from oof_report import fold_pairs  # noqa: E402

T_HIGH = [0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]  # 0: no hysteresis
MIN_AREA = [0, 50, 100, 200, 400, 800]


def component_stats(p8: np.ndarray, gt: np.ndarray, thr: float) -> dict:
    """The statistics every rule needs, per predicted lesion (component of ``p8 > thr``):
    highest probability, area, true and false positive pixels; and which annotated lesions
    each touches (to count found lesions), with the annotated lesion count and pixels."""
    from scipy import ndimage as ndi

    from napari_lesionseg.core.lesions import label_runs

    valid = gt != 255
    truth = (gt == 1) & valid
    lab, n, _, _ = label_runs((p8 > thr) & valid)
    glab, n_gt, _, _ = label_runs(truth)
    idx = np.arange(1, n + 1)
    maxp = ndi.maximum(p8, lab, idx) if n else np.zeros(0)
    area = np.bincount(lab.ravel(), minlength=n + 1)[1:]
    tp = np.bincount(lab[truth], minlength=n + 1)[1:]
    both = (lab > 0) & truth
    pairs = np.unique(np.stack([glab[both], lab[both]]), axis=1) if both.any() else np.zeros((2, 0), int)
    return {"maxp": np.asarray(maxp, float).tolist(), "area": area.tolist(), "tp": tp.tolist(),
            "fp": (area - tp).tolist(), "gt_px": int(truth.sum()), "gt_lesions": int(n_gt),
            "pairs": pairs.tolist()}


def score(photos: list[dict], t_high: float = 0.0, min_area: int = 0,
          rules: list[tuple[float, int]] | None = None) -> dict:
    """Dataset and per-image Dice, lesion recall and precision of the masks a rule keeps
    (``rules``: one per photo instead), over ``photos`` pooled."""
    tp_all = fp_all = gt_all = found = n_gt = kept_n = kept_right = 0
    dices = []
    for i, s in enumerate(photos):
        th, ma = rules[i] if rules else (t_high, min_area)
        keep = (np.asarray(s["maxp"]) >= th) & (np.asarray(s["area"]) >= ma)
        tp, fp = int(np.asarray(s["tp"])[keep].sum()), int(np.asarray(s["fp"])[keep].sum())
        tp_all, fp_all, gt_all = tp_all + tp, fp_all + fp, gt_all + s["gt_px"]
        denom = tp + fp + s["gt_px"]
        dices.append(2 * tp / denom if denom else 1.0)
        g, pr = s["pairs"] if s["pairs"] else ([], [])
        found += len({gi for gi, pi in zip(g, pr) if keep[pi - 1]})
        kept_right += len({pi for pi in pr if keep[pi - 1]})
        n_gt += s["gt_lesions"]
        kept_n += int(keep.sum())
    denom = tp_all + fp_all + gt_all
    return {"dice_ds": 2 * tp_all / denom if denom else 1.0, "dice_img": float(np.mean(dices)),
            "lesion_recall": found / n_gt if n_gt else float("nan"),
            "lesion_precision": kept_right / kept_n if kept_n else float("nan"), "lesions": kept_n}


def objective(r: dict) -> float:
    return (r["dice_ds"] + r["dice_img"]) / 2


def photo_stats(run_dir: Path, variant: str, fold: int, images: str, cache: Path) -> list[dict]:
    """Each of the fold's photos' component statistics, predicted once and cached."""
    from napari_lesionseg.core.image_io import read_image
    from napari_lesionseg.core.inference import predict
    from napari_lesionseg.core.model_folder import load_model_folder
    from napari_lesionseg.core.progress import run_to_end

    oof = run_dir / "oof"
    sha = cp.weights_sha256(oof)
    out = cache / f"{run_dir.name}.json"
    if out.is_file():
        saved = json.loads(out.read_text())
        if saved.get("model_sha256") == sha:
            return saved["photos"]
    model = load_model_folder(oof)
    thr = model.config.inference.threshold
    _, val_pairs = fold_pairs(variant, fold, images)
    photos = []
    for pair in val_pairs:
        t0 = time.perf_counter()
        rgb, _ = read_image(pair.image)
        gt = pair.read_mask(shape=rgb.shape[:2])
        pred = run_to_end(predict(model, rgb, types=[]))
        p8 = np.rint(pred.probability * 255.0) / 255.0
        photos.append({"image": pair.id, "threshold": thr, **component_stats(p8, gt, thr)})
        print(f"  {run_dir.name} {pair.id}: {len(photos[-1]['area'])} lesions, {time.perf_counter() - t0:.1f} s",
              flush=True)
    cache.mkdir(parents=True, exist_ok=True)
    out.write_text(json_text({"model_sha256": sha, "photos": photos}))
    return photos


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", required=True)
    ap.add_argument("--variants", default="default,multi_he_crops")
    ap.add_argument("--folds", default="0,1,2,3,4")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--images", default=str(cp.DATA))
    ap.add_argument("--cache", default="/tmp/cv/lesion_stats")
    ap.add_argument("--out", default=str(HERE / "results" / "lesion_filter.json"))
    args = ap.parse_args()

    import torch

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    folds = [int(f) for f in args.folds.split(",")]
    grid = list(itertools.product(T_HIGH, MIN_AREA))
    report: dict = {"machine": platform.processor() or platform.machine(), "date": time.strftime("%Y-%m-%d"),
                    "folds": folds, "steps": args.steps, "grid": {"t_high": T_HIGH, "min_area": MIN_AREA},
                    "variants": {}}
    print(f"{'recipe':16s} {'rule':22s} {'Dice dataset':>12s} {'per image':>10s} {'lesion rec':>10s} "
          f"{'lesion prec':>11s} {'lesions':>8s}")
    for variant in args.variants.split(","):
        stats = {}
        for fold in folds:
            run = Path(args.runs) / f"{variant}-f{fold}-s{args.steps}"
            if not (run / "oof" / "weights.safetensors").is_file():
                raise SystemExit(f"{run}: no oof/ model (run compare_presets.py --full-res first)")
            stats[fold] = photo_stats(run, variant, fold, args.images, Path(args.cache))
        chosen, per_fold = {}, {}
        for fold in folds:
            others = [p for f in folds if f != fold for p in stats[f]]
            best = max(grid, key=lambda rule: objective(score(others, *rule)))
            chosen[fold] = best
            per_fold[fold] = {"rule": best, "none": score(stats[fold], 0.0, 0), "filtered": score(stats[fold], *best)}
        # every photo scored by the rule its fold's others chose, pooled over the folds
        photos = [p for f in folds for p in stats[f]]
        pooled = {"none": score(photos),
                  "filtered": score(photos, rules=[chosen[f] for f in folds for _ in stats[f]])}
        for name, label in (("none", "none"), ("filtered", "cross-fitted")):
            p = pooled[name]
            print(f"{variant:16s} {label:22s} {p['dice_ds']:12.3f} {p['dice_img']:10.3f} "
                  f"{p['lesion_recall']:10.2f} {p['lesion_precision']:11.2f} {p['lesions']:8d}")
        for fold in folds:
            print(f"{'':16s} fold {fold}: t_high {chosen[fold][0]:.1f}, min area {chosen[fold][1]:4d} px  "
                  f"Dice {per_fold[fold]['none']['dice_ds']:.3f} -> {per_fold[fold]['filtered']['dice_ds']:.3f}, "
                  f"per image {per_fold[fold]['none']['dice_img']:.3f} -> {per_fold[fold]['filtered']['dice_img']:.3f}")
        report["variants"][variant] = {"pooled": pooled, "per_fold": {str(k): v for k, v in per_fold.items()}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json_text(report, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
