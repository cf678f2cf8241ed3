"""Benchmark: does a fuzzy map from training dynamics find the mask's mistakes better than the
entropy of the probability? (issue 12's second proposal: DALE's AE and a label-free ER, the
disagreement between checkpoints saved along training.)

For each cross-validation fold run of ``compare_presets.py --full-res --snapshots`` (its ``oof/``
model, calibrated on training photos only, and its ``snapshots/step_<N>/``: the weights being
trained at every validation), on the fold's own photos, which no model here trained on, on the
working grid: the final model's calibrated probability with its TTA and its thresholded mask
(fixed: every map ranks the same mask's mistakes), and each snapshot's probability (no TTA,
uncalibrated). Maps, all free of fitted parameters (nothing is chosen on the photos that score):

- ``entropy``: binary entropy of the final probability (the baseline the issue names);
- ``snap_ae``: DALE's AE, the mean over the snapshots and the final model of each one's entropy;
- ``snap_er``: a label-free ER, the mean over the snapshots of ``|p_snapshot - mask|``: how far
  the checkpoints along training stood from the final decision;
- ``snap_spread``: the standard deviation of the snapshots' and the final probabilities;
- ``entropy+snap_er``: the sum of the first and the third (DALE's membership takes the larger of
  its two soft-thresholded terms; with no thresholds fitted, their sum ranks both);
- ``ensemble_entropy``: the entropy of the mean of the snapshots' and the final probabilities.

Capture at k %: the share of the mask's wrong pixels among the k % of each photo's disc where the
map is highest (``review_metrics.top_capture``; ties shared), pooled over the photos as
``lesionseg evaluate`` pools it. Prints a table per fold and pooled, and writes JSON.

    python benchmarks/snapshot_map.py --runs /tmp/cv/runs --variant default_ema --steps 2000 --folds 0,1 \\
        [--cache /tmp/cache] [--out benchmarks/results/snapshot_map_folds01.json]

Reads ``../shared/data`` (the folds' photos).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

from napari_lesionseg.core.jsonfile import json_text

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import compare_presets as cp  # noqa: E402

MAPS = ("entropy", "snap_ae", "snap_er", "snap_spread", "entropy+snap_er", "ensemble_entropy")


def snapshot_dirs(run_dir: Path) -> list[Path]:
    """The run's snapshots in step order."""
    snaps = sorted((run_dir / "snapshots").glob("step_*"), key=lambda p: int(p.name.split("_")[1]))
    if not snaps:
        raise SystemExit(f"{run_dir} has no snapshots/: train it with compare_presets.py --snapshots")
    return snaps


def photo_maps(final_prob: np.ndarray, mask: np.ndarray, snap_probs: list[np.ndarray]) -> dict[str, np.ndarray]:
    """The maps of one photo (see the module's docstring), same shape as ``final_prob``."""
    from napari_lesionseg.core.fuzzy import binary_entropy

    ent = binary_entropy(final_prob)
    allp = np.stack([*snap_probs, final_prob]).astype(np.float32)
    ae = np.mean([binary_entropy(p) for p in allp], axis=0)
    er = np.mean([np.abs(p - mask) for p in snap_probs], axis=0)
    return {"entropy": ent, "snap_ae": ae, "snap_er": er, "snap_spread": allp.std(axis=0),
            "entropy+snap_er": ent + er, "ensemble_entropy": binary_entropy(allp.mean(axis=0))}


def main() -> None:
    from oof_report import fold_pairs

    from lesionseg_training.data import prepare_pair
    from napari_lesionseg.core.inference import work_probability
    from napari_lesionseg.core.model_folder import load_model_folder
    from napari_lesionseg.core.progress import run_to_end
    from napari_lesionseg.core.review_metrics import TOP_FRACTIONS, top_capture

    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", default="/tmp/cv/runs")
    ap.add_argument("--variant", default="default_ema")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--folds", default="0,1")
    ap.add_argument("--images", default=str(cp.DATA))
    ap.add_argument("--cache", default=None)
    ap.add_argument("--out", default=str(HERE / "results" / "snapshot_map.json"))
    ap.add_argument("--without", default="", metavar="IDS",
                    help="also pool without these photos (a sensitivity check, e.g. IDRiD_17), not a score")
    args = ap.parse_args()

    t0 = time.time()
    folds = [int(f) for f in args.folds.split(",")]
    per_fold: dict[int, dict] = {}
    total_wrong = 0
    total_cap = {m: np.zeros(len(TOP_FRACTIONS)) for m in MAPS}
    for fold in folds:
        run_dir = Path(args.runs) / cp.run_name(args.variant, fold, None, args.steps)
        final = load_model_folder(run_dir / "oof")
        snaps = [load_model_folder(p) for p in snapshot_dirs(run_dir)]
        _, val_pairs = fold_pairs(args.variant, fold, args.images)
        wrong_n = 0
        cap = {m: np.zeros(len(TOP_FRACTIONS)) for m in MAPS}
        photos: dict[str, dict] = {}
        for pair in val_pairs:
            item = prepare_pair(pair, final.config.preprocess, Path(args.cache) if args.cache else None)
            disc = item.fov.astype(bool)
            prob = run_to_end(work_probability(final, item.x, disc))
            mask = (prob >= final.config.inference.threshold).astype(np.float32)
            snap_probs = [run_to_end(work_probability(s, item.x, disc, tta="none")) for s in snaps]
            wrong = ((mask > 0) != (item.y == 1)) & (item.y != 255) & disc
            wrong_n += int(np.count_nonzero(wrong))
            photos[pair.id] = {"wrong_pixels": int(np.count_nonzero(wrong)), "captured": {}}
            for name, m in photo_maps(prob, mask, snap_probs).items():
                got = top_capture(m, wrong, disc)
                cap[name] += got
                photos[pair.id]["captured"][name] = got.round(2).tolist()
            print(f"fold {fold} {pair.id}: wrong {np.count_nonzero(wrong)}", flush=True)
        per_fold[fold] = {"photos": photos, "wrong_pixels": wrong_n,
                          "snapshots": [s.path.name for s in snaps],
                          "capture": {m: (cap[m] / max(wrong_n, 1)).round(4).tolist() for m in MAPS}}
        total_wrong += wrong_n
        for m in MAPS:
            total_cap[m] += cap[m]

    pooled = {m: (total_cap[m] / max(total_wrong, 1)).round(4).tolist() for m in MAPS}
    ks = " / ".join(f"{round(f * 100)} %" for f in TOP_FRACTIONS)
    print(f"\nwrong pixels captured in the top {ks} of the disc (working grid; {args.variant}, {args.steps} steps)")
    print(f"{'map':<18}" + "".join(f"{'fold ' + str(f):>22}" for f in folds) + f"{'pooled':>22}")
    for m in MAPS:
        cells = ["/".join(f"{v:.3f}" for v in per_fold[f]["capture"][m]) for f in folds]
        print(f"{m:<18}" + "".join(f"{c:>22}" for c in cells) + f"{'/'.join(f'{v:.3f}' for v in pooled[m]):>22}")
    without = {}
    if args.without:
        left = set(args.without.split(","))
        rest = [ph for f in folds for pid, ph in per_fold[f]["photos"].items() if pid not in left]
        n = sum(ph["wrong_pixels"] for ph in rest)
        without = {"photos_left_out": sorted(left), "wrong_pixels": n,
                   "capture": {m: (np.sum([ph["captured"][m] for ph in rest], axis=0) / max(n, 1)).round(4).tolist()
                               for m in MAPS}}
        print(f"\nwithout {args.without} (a sensitivity check, not a score):")
        for m in MAPS:
            print(f"{m:<18}{'/'.join(f'{v:.3f}' for v in without['capture'][m]):>22}")
    Path(args.out).write_text(json_text({
        "variant": args.variant, "steps": args.steps, "folds": per_fold, "pooled": pooled, "without": without,
        "fractions": list(TOP_FRACTIONS), "grid": "working", "machine": platform.processor() or platform.machine(),
        "date": time.strftime("%Y-%m-%d"), "seconds": round(time.time() - t0, 1)}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
