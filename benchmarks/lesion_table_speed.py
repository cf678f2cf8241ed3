"""Benchmark: the lesion table (labelling + per-lesion area, centroid, box, mean/max probability,
fuzzy fraction) by our run-based code against scikit-image (``measure.label`` +
``measure.regionprops_table``) and SciPy (``ndimage.label``), on real full-size IDRiD
hemorrhage masks. Both must give the same table; the faster stays in the hot path
(``lesions.lesion_table``). Prints a table and writes results/lesion_table_speed.json.

    python benchmarks/lesion_table_speed.py [--masks DIR] [--n 8] [--runs 7]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from napari_lesionseg.core.jsonfile import json_text

HERE = Path(__file__).resolve().parent
DEFAULT_MASKS = HERE.parent.parent / "shared" / "data" / "idrid" / "train" / "masks_HE"


def skimage_table(mask: np.ndarray, prob: np.ndarray, fuzzy: np.ndarray) -> list[dict]:
    from skimage import measure

    labels = measure.label(mask, connectivity=2)
    props = measure.regionprops_table(labels, intensity_image=np.stack([prob, (fuzzy > 0.5).astype(np.float32)], -1),
                                      properties=("label", "area", "centroid", "bbox", "intensity_mean",
                                                  "intensity_max"))
    return [{"area_px": int(props["area"][i]), "centroid_y": float(props["centroid-0"][i]),
             "centroid_x": float(props["centroid-1"][i]), "y0": int(props["bbox-0"][i]), "x0": int(props["bbox-1"][i]),
             "y1": int(props["bbox-2"][i]), "x1": int(props["bbox-3"][i]),
             "mean_prob": float(props["intensity_mean-0"][i]), "max_prob": float(props["intensity_max-0"][i]),
             "fuzzy_fraction": float(props["intensity_mean-1"][i])} for i in range(len(props["label"]))]


def ours_table(mask: np.ndarray, prob: np.ndarray, fuzzy: np.ndarray) -> list[dict]:
    from napari_lesionseg.core.lesions import lesion_table

    lesions, _ = lesion_table(mask, prob, fuzzy)
    return [{k: v for k, v in les.row().items() if k not in ("id", "area_mm2")} for les in lesions]


def scipy_label(mask: np.ndarray, prob: np.ndarray, fuzzy: np.ndarray) -> int:
    from scipy import ndimage

    return int(ndimage.label(mask, np.ones((3, 3)))[1])


def median_ms(fn, args, runs: int) -> float:
    fn(*args)  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def main() -> None:
    from napari_lesionseg.core.image_io import read_mask

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--masks", type=Path, default=DEFAULT_MASKS)
    ap.add_argument("--n", type=int, default=8, help="how many masks")
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    for path in sorted(args.masks.glob("*"))[: args.n]:
        mask = read_mask(path)
        # a probability map like the model's: high on lesions, low elsewhere, with noise
        prob = np.clip(mask * 0.7 + rng.random(mask.shape, np.float32) * 0.3, 0, 1).astype(np.float32)
        fuzzy = rng.random(mask.shape, np.float32)
        a, b = ours_table(mask, prob, fuzzy), skimage_table(mask, prob, fuzzy)
        same = len(a) == len(b) and all(
            all(abs(x[k] - y[k]) <= 1e-4 * max(1.0, abs(y[k])) for k in y) for x, y in zip(a, b))
        rows.append({"mask": path.name, "shape": list(mask.shape), "lesions": len(a), "same_table": same,
                     "ours_ms": median_ms(ours_table, (mask, prob, fuzzy), args.runs),
                     "skimage_ms": median_ms(skimage_table, (mask, prob, fuzzy), args.runs),
                     "scipy_label_only_ms": median_ms(scipy_label, (mask, prob, fuzzy), args.runs)})
    print(f"{'mask':18s} {'lesions':>7s} {'same':>5s} {'ours ms':>8s} {'skimage ms':>10s} {'scipy label ms':>14s}")
    for r in rows:
        print(f"{r['mask']:18s} {r['lesions']:7d} {str(r['same_table']):>5s} {r['ours_ms']:8.1f} "
              f"{r['skimage_ms']:10.1f} {r['scipy_label_only_ms']:14.1f}")
    med = {k: statistics.median(r[k] for r in rows) for k in ("ours_ms", "skimage_ms", "scipy_label_only_ms")}
    print(f"median over masks: ours {med['ours_ms']:.1f} ms, scikit-image {med['skimage_ms']:.1f} ms, "
          f"scipy label alone {med['scipy_label_only_ms']:.1f} ms")
    out = HERE / "results" / "lesion_table_speed.json"
    out.write_text(json_text({"rows": rows, "median": med, "date": time.strftime("%Y-%m-%d")}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
