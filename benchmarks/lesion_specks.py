"""Benchmark (accuracy, no timing): how small the hemorrhages are that IDRiD's graders outlined,
and what the shipped default's smallest predicted lesions are, out of fold.

A photo's lesion table can list a lesion of one or a few pixels (a tessellated fundus segmented
at 1429x949 listed one of 1 px). Is a minimum lesion area worth a rule? Two measurements:

1. The annotated hemorrhages (``../shared/data/idrid/train/masks_HE``, 8-connected components),
   their areas at a 1000-px field of view (the photo's own field of view found as ``predict``
   finds it): percentiles and the smallest.
2. The shipped recipe's out-of-fold predictions as stored
   (``results/oof_predictions/ensemble_cameras_multi-f*-s4000.npz``: every photo scored by the
   fold pair that never trained on it, on the working grid), thresholded where the shipped
   default's threshold lies before its calibration: the predicted components' areas, how many
   touch an annotated hemorrhage (the fold pairs were calibrated each on their own photos: the
   final model's mapping stands in for theirs), and lesion-level recall and precision with the components of
   at most 0-4 working-grid pixels left out. A hemorrhage pixel the fold model gave a raw
   probability under 2e-4 is not stored where it was, so the annotated components here are
   those of the stored pixels (a lesion's faint pixels can split it): read the rows against each
   other.

    python benchmarks/lesion_specks.py [--out results/lesion_specks.json] [--no-masks]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "idrid" / "train"
STORED = HERE / "results" / "oof_predictions" / "ensemble_cameras_multi-f{fold}-s4000.npz"
EIGHT = np.ones((3, 3), bool)


def annotated_sizes(data: Path) -> dict:
    from PIL import Image

    from napari_lesionseg.core.fov import detect_fov
    from napari_lesionseg.core.image_io import read_image

    at_1000, raw = [], []
    for m in sorted((data / "masks_HE").glob("*_HE.tif")):
        mask = np.asarray(Image.open(m)) > 0
        rgb, _ = read_image(data / "images" / f"{m.name[:-len('_HE.tif')]}.jpg")
        d = 2.0 * detect_fov(rgb).radius
        a = np.bincount(ndimage.label(mask, structure=EIGHT)[0].ravel())[1:]
        raw += a.tolist()
        at_1000 += (a * (1000.0 / d) ** 2).tolist()
    v = np.asarray(at_1000)
    return {"components": len(v), "smallest_at_1000px_fov": sorted(round(x, 2) for x in v)[:5],
            "percentiles_at_1000px_fov": {str(q): round(float(np.percentile(v, q)), 2) for q in (0.5, 1, 5, 25, 50)},
            "smallest_raw_px": int(min(raw))}


def predicted_specks(limits: list[int]) -> dict:
    from lesionseg_training.oof_predictions import load
    from napari_lesionseg.core.bundled import bundled_model_dir
    from napari_lesionseg.core.metrics import LesionCounts
    from napari_lesionseg.core.model_folder import load_model_config

    inf = load_model_config(bundled_model_dir("default")).inference
    kx, ky = (np.asarray(k) for k in inf.calibration)
    t_raw = float(np.interp(inf.threshold, ky, kx))  # the threshold before calibration
    comps: list[tuple[int, bool]] = []
    lesion = {lim: LesionCounts() for lim in limits}
    for fold in range(5):
        for pr in load(Path(str(STORED).format(fold=fold))):
            p, g = pr.probs[0], pr.labels[0] == 1
            cc, n = ndimage.label(p > t_raw, structure=EIGHT)
            area = np.bincount(cc.ravel(), minlength=n + 1)
            if n:
                touch = ndimage.maximum(g, cc, index=np.arange(1, n + 1)).astype(bool)
                comps += list(zip(area[1:].tolist(), touch.tolist()))
            for lim in limits:
                keep = area > lim
                keep[0] = False
                lesion[lim].add(keep[cc], g)
    a = np.array([c[0] for c in comps])
    tt = np.array([c[1] for c in comps])
    small = {str(lim): {"components": int((a <= lim).sum()), "touching_a_hemorrhage": int(tt[a <= lim].sum())}
             for lim in limits if lim > 0}
    rows = []
    for lim, c in lesion.items():
        rec, prec = c.gt_found / c.gt, c.pred_right / max(c.pred, 1)
        rows.append({"drop_at_most_px": lim, "annotated_found": c.gt_found, "annotated": c.gt, "recall": rec,
                     "predicted": c.pred, "false": c.pred - c.pred_right, "precision": prec,
                     "f1": 2 * rec * prec / (rec + prec)})
    return {"threshold": inf.threshold, "threshold_raw": t_raw, "components": len(a),
            "touching_share": float(tt.mean()), "small": small, "lesion_level": rows,
            "working_px_at_1000px_fov": (1000.0 / 832) ** 2}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=HERE / "results" / "lesion_specks.json")
    ap.add_argument("--no-masks", action="store_true", help="skip the annotated sizes (they read ../shared/data)")
    args = ap.parse_args()
    out: dict = {"date": time.strftime("%Y-%m-%d"), "stored": str(STORED.name)}
    if not args.no_masks:
        if not (DATA / "masks_HE").is_dir():
            sys.exit(f"{DATA / 'masks_HE'}: not found (give --no-masks to skip the annotated sizes)")
        out["annotated"] = annotated_sizes(DATA)
        an = out["annotated"]
        print(f"annotated hemorrhages: {an['components']} components; at a 1000-px field of view the smallest "
              f"{an['smallest_at_1000px_fov'][0]} px, 0.5 % under {an['percentiles_at_1000px_fov']['0.5']}, "
              f"median {an['percentiles_at_1000px_fov']['50']} px (smallest in the photo: {an['smallest_raw_px']} px)")
    out["predicted"] = pr = predicted_specks([0, 1, 2, 3, 4])
    print(f"predicted components out of fold: {pr['components']}, {pr['touching_share']:.1%} touching an annotated "
          f"hemorrhage; a working-grid px is {pr['working_px_at_1000px_fov']:.2f} px at a 1000-px field of view")
    print(f"{'drop <= px':>10} {'found':>6} {'of':>5} {'recall':>7} {'predicted':>9} {'false':>6} {'precision':>9} {'F1':>6}")
    for r in pr["lesion_level"]:
        print(f"{r['drop_at_most_px']:>10} {r['annotated_found']:>6} {r['annotated']:>5} {r['recall']:7.3f} "
              f"{r['predicted']:>9} {r['false']:>6} {r['precision']:9.3f} {r['f1']:6.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from napari_lesionseg.core.jsonfile import json_text

    args.out.write_text(json_text(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
