"""How much mask Dice a threshold fitted on some folds' photos loses on the others', against the
threshold those photos would choose for themselves.

A shipped model's threshold is fitted out of fold on its recipe's stored fold predictions
(``lesionseg_training.oof_calibrate --predictions``); the bundled ``multi`` pair had three folds'
files (30 photos) where the default had five (51). This asks what that costs: for every way to
fit on ``--fit`` of the files and test on the rest, each output's Dice-optimal cut on the fit
photos' pooled pixels is applied to the test photos' pooled pixels (dataset Dice) and compared
with the test photos' own best cut. The calibration does not enter: it is monotone, so a cut
on its scale is a cut on the raw logit, and the cuts are compared on the raw logit's 4096 bins
(width 0.008), where the fits bin it too.

    python benchmarks/threshold_transfer.py \\
        --predictions benchmarks/results/oof_predictions/multi_he_crops-f{0,1,2,3,4}-s4000.npz \\
        --fit 3 [--fit 4] [--exclude IDRiD_04,IDRiD_16] [--out results/threshold_transfer.json]

Prints a table and writes JSON. Reads only the stored-predictions files.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
from pathlib import Path

import numpy as np

from napari_lesionseg.core.jsonfile import json_text

HERE = Path(__file__).resolve().parent


def fold_histograms(path: Path, exclude: frozenset[str]) -> tuple[list[str], np.ndarray]:
    """The file's outputs and its photos' pooled ``(T, 2, bins)`` counts (background, lesion)
    of scored pixels in the fits' logit bins, without the photos of ``exclude``."""
    from lesionseg_training.oof_predictions import LOGIT_BINS, load, load_meta, logit, logit_bins

    outputs = list(load_meta(path)["recipe_io"]["outputs"])
    hist = np.zeros((len(outputs), 2, LOGIT_BINS), np.int64)
    for pred in load(path):
        if pred.id in exclude:
            continue
        for k in range(len(outputs)):
            scored = pred.fov & (pred.labels[k] != 255)
            bins = logit_bins(logit(pred.probs[k][scored]))
            pos = pred.labels[k][scored] == 1
            hist[k, 0] += np.bincount(bins[~pos], minlength=LOGIT_BINS)
            hist[k, 1] += np.bincount(bins[pos], minlength=LOGIT_BINS)
    return outputs, hist


def dice_by_cut(hist: np.ndarray) -> np.ndarray:
    """Dataset Dice of ``pixel in bin >= c`` for every cut ``c`` of one output's ``(2, bins)``."""
    tp = np.cumsum(hist[1][::-1])[::-1].astype(np.float64)
    fp = np.cumsum(hist[0][::-1])[::-1].astype(np.float64)
    fn = hist[1].sum() - tp
    return 2 * tp / np.maximum(2 * tp + fp + fn, 1.0)


def transfer(fit: np.ndarray, test: np.ndarray) -> dict[str, float]:
    """The fit photos' best cut applied to the test photos, against the test photos' own."""
    cut = int(np.argmax(dice_by_cut(fit)))
    on_test = dice_by_cut(test)
    own = int(np.argmax(on_test))
    return {"dice": float(on_test[cut]), "own_best": float(on_test[own]), "loss": float(on_test[own] - on_test[cut]),
            "cut_bins_apart": cut - own}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--predictions", type=Path, nargs="+", required=True, help="one stored-predictions file per fold")
    ap.add_argument("--fit", type=int, action="append", help="how many files to fit on (repeatable; default 3)")
    ap.add_argument("--exclude", default="IDRiD_04,IDRiD_16", help="photos left out (the final model's held-out)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "threshold_transfer.json")
    args = ap.parse_args(argv)
    sizes = args.fit or [3]
    if any(not 1 <= n < len(args.predictions) for n in sizes):
        ap.error(f"--fit must leave at least one of the {len(args.predictions)} files to test on")
    exclude = frozenset(filter(None, args.exclude.split(",")))
    folds = [fold_histograms(p, exclude) for p in args.predictions]
    outputs = folds[0][0]
    if any(o != outputs for o, _ in folds):
        sys.exit("the files hold different outputs: " + "; ".join(f"{p}: {o}" for p, (o, _) in zip(args.predictions, folds)))
    report: dict = {"files": [str(p) for p in args.predictions], "exclude": sorted(exclude), "fit_sizes": {}}
    print("fit files | output | splits | test Dice at the fitted cut | test's own best | loss: mean (max)")
    for n in sizes:
        rows: dict[str, list[dict]] = {t: [] for t in outputs}
        for chosen in itertools.combinations(range(len(folds)), n):
            fit = sum(folds[i][1] for i in chosen)
            test = sum(folds[i][1] for i in range(len(folds)) if i not in chosen)
            for k, t in enumerate(outputs):
                if fit[k, 1].sum() and test[k, 1].sum():
                    rows[t].append({"fit": list(chosen), **transfer(fit[k], test[k])})
        summary = {}
        for t, rs in rows.items():
            if not rs:
                continue
            losses = [r["loss"] for r in rs]
            summary[t] = {"splits": rs, "mean_loss": statistics.fmean(losses), "max_loss": max(losses),
                          "mean_dice": statistics.fmean(r["dice"] for r in rs),
                          "mean_own_best": statistics.fmean(r["own_best"] for r in rs)}
            print(f"{n} | {t} | {len(rs)} | {summary[t]['mean_dice']:.3f} | {summary[t]['mean_own_best']:.3f} | "
                  f"{summary[t]['mean_loss']:.3f} ({summary[t]['max_loss']:.3f})")
        report["fit_sizes"][str(n)] = summary
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json_text(report, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
