"""Benchmark: how a model's lesions fare by their place in the round field of view, on annotated
photos each fold model never trained on: per ring of ``field_r`` (0 centre, 1 rim), the predicted
lesions and the share of them that touch an annotated lesion (lesion precision), the annotated
lesions and the share of them the mask touches (lesion recall), as ``lesionseg evaluate`` counts
lesions. Does a lesion at the rim deserve more doubt than one further in (the tessellated fundi's
false alarms, top-level README "What an annotator will meet"; *Review lesions* > order)?

    python benchmarks/lesions_by_ring.py --models RUNS/default_cameras-f1-s4000/oof ... \\
        [--images ../shared/data/idrid/train] [--out results/lesions_by_ring.json]

Each model folder must name its held-out photos (``metrics.json`` ``held_out``: the
``oof/`` folders ``compare_presets.py --full-res`` writes). Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data" / "idrid" / "train"
RINGS = [(0.0, 0.5), (0.5, 0.8), (0.8, 0.9), (0.9, 2.0)]


def ring_of(r: float) -> int:
    return next(i for i, (lo, hi) in enumerate(RINGS) if lo <= r < hi)


def main() -> None:
    from napari_lesionseg.core.image_io import read_image, read_mask
    from napari_lesionseg.core.inference import predict, run_to_end
    from napari_lesionseg.core.jsonfile import json_text
    from napari_lesionseg.core.model_folder import load_model_folder

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=Path, nargs="+", required=True, help="fold model folders (their oof/)")
    ap.add_argument("--images", type=Path, default=SHARED, help="IDRiD-layout root (images/, masks_HE/)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "lesions_by_ring.json")
    args = ap.parse_args()
    n = len(RINGS)
    total = np.zeros((4, n), int)  # marked, marked right, annotated, annotated found: per ring
    unplaced, photos, t0 = 0, [], time.perf_counter()
    for folder in args.models:
        model = load_model_folder(folder)
        held = model.metrics["held_out"]["photos"]
        for pid in held:
            mask_path = args.images / "masks_HE" / f"{pid}_HE.tif"
            if not mask_path.is_file():
                continue  # a photo without hemorrhages annotated (IDRiD_43)
            rgb, _ = read_image(args.images / "images" / f"{pid}.jpg")
            gt = read_mask(mask_path, shape=rgb.shape[:2]) == 1
            pred = run_to_end(predict(model, rgb))
            field = pred.anatomy
            if field.field is None:
                unplaced += 1
                continue
            counts = count_by_ring(pred.lesions, pred.labels, gt, field)
            total += counts
            print(f"{folder.parent.name} {pid}: {len(pred.lesions)} lesions, {int(counts[2].sum())} annotated",
                  flush=True)
            photos.append(pid)
    pred_n, pred_right, gt_n, gt_found = total
    rows = [{"ring": list(RINGS[k]), "pred_lesions": int(pred_n[k]), "precision": _share(pred_right[k], pred_n[k]),
             "gt_lesions": int(gt_n[k]), "recall": _share(gt_found[k], gt_n[k])} for k in range(n)]
    print(f"\n{len(photos)} photos ({unplaced} without a round field left out), {time.perf_counter() - t0:.0f} s\n"
          "| field r | lesions marked | lesion precision | lesions annotated | lesion recall |\n|---|---|---|---|---|")
    for r in rows:
        lo, hi = r["ring"]
        print(f"| {lo}-{min(hi, 1.0)} | {r['pred_lesions']} | {_fmt(r['precision'])} | {r['gt_lesions']} | "
              f"{_fmt(r['recall'])} |")
    args.out.write_text(json_text({"models": [str(m) for m in args.models], "photos": photos,
                                    "unplaced": unplaced, "rings": rows,
                                    "date": time.strftime("%Y-%m-%d %H:%M")}, indent=1))
    print(f"-> {args.out}")


def count_by_ring(lesions: list, labels: np.ndarray, gt: np.ndarray, anatomy) -> np.ndarray:
    """``[marked, marked touching an annotation, annotated, annotated touched by the mask]``
    per ring (rows of 4 x len(RINGS)): ``lesions`` and ``labels`` a prediction's (lesion ``i``
    painted ``i``), ``gt`` the annotated lesion pixels, ``anatomy`` the photo's (its field)."""
    from napari_lesionseg.core.lesions import lesion_table

    out = np.zeros((4, len(RINGS)), int)
    touching = set(np.unique(labels[gt]).tolist()) - {0}
    for les in lesions:
        k = ring_of(anatomy.field_r(les.centroid_y, les.centroid_x))
        out[0, k] += 1
        out[1, k] += int(les.id in touching)
    annotated, gt_labels = lesion_table(gt.view(np.uint8), gt.astype(np.float32), None, None)
    found = set(np.unique(gt_labels[labels > 0]).tolist()) - {0}
    for les in annotated:
        k = ring_of(anatomy.field_r(les.centroid_y, les.centroid_x))
        out[2, k] += 1
        out[3, k] += int(les.id in found)
    return out


def _share(k: int, n: int) -> float | None:
    return None if n == 0 else round(float(k) / float(n), 4)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


if __name__ == "__main__":
    main()
