"""Benchmark: does the Review dock's "about N of the regions are likely mistakes, M of them in
the first 20 rows" hold on photos the model never saw?

The dock adds up the regions' scores, each the share of such regions that were mistakes on the
model's training photos at the region's highest probability (``inference.review`` rates,
``training/fit_review.py``). For each fold model (a ``compare_presets.py --full-res`` run's
``oof/`` folder, which names the photos it never trained on): its rates fitted on its own
training photos, as the trainer fits them; then each photo of its fold predicted at full
resolution through the shipped inference path, its regions listed as the dock lists them, and
counted against the annotation by fit_review's rule (a lesion region is a mistake if it touches
no annotated hemorrhage, a possible miss if it touches one). Prints a table (per photo and
summed) and writes JSON::

    python benchmarks/review_expected.py --models <runs>/default-f0-s1000/oof <runs>/default-f1-s1000/oof \\
        --cache /tmp/cache --out benchmarks/results/review_expected_default_s1000_f01.json

Reads ``../shared/data`` (the photos and their hemorrhage masks).
"""

from __future__ import annotations

import argparse
import platform
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from napari_lesionseg.core.jsonfile import json_text
from napari_lesionseg.core.review_metrics import QUEUE_FIRST as FIRST  # the dock's "first rows"

HERE = Path(__file__).resolve().parent


def mistakes(rs, gt: np.ndarray) -> np.ndarray:
    """Per region of ``rs`` (a ``ReviewSet``), in its order: was it a mistake? A lesion region
    that touches no annotated pixel of ``gt``, a possible miss that touches one (fit_review's rule)."""
    return np.array([bool(gt[rs.pixels(r)].any()) != (r.kind == "lesion") for r in rs.regions], bool)


def one_model(model_dir: Path, images: Path, cache: Path | None) -> list[dict]:
    from lesionseg_training.data import find_pairs, prepare_pair
    from lesionseg_training.fit_review import fit_review
    from lesionseg_training.train_config import DataConfig
    from napari_lesionseg.core.image_io import read_image, read_mask
    from napari_lesionseg.core.inference import predict
    from napari_lesionseg.core.model_folder import load_model_folder
    from napari_lesionseg.core.progress import run_to_end
    from napari_lesionseg.core.review import review_regions

    model = load_model_folder(model_dir)
    unseen = set(model.unseen_photos)
    if not unseen:
        raise SystemExit(f"{model_dir}: names no photos it never trained on (not a fold model)")
    pairs = find_pairs(DataConfig(images=str(images)))
    config, _ = fit_review(model.net, model.config,
                           (prepare_pair(p, model.config.preprocess, cache) for p in pairs if p.id not in unseen))
    model = replace(model, config=config)
    rows = []
    for p in (p for p in pairs if p.id in unseen):
        rgb, _ = read_image(p.image)
        gt = read_mask(p.mask, shape=rgb.shape[:2]) == 1
        pred = run_to_end(predict(model, rgb))
        rs = review_regions(pred.mask, pred.probability, pred.fuzzy, threshold=pred.threshold, review=pred.review)
        wrong = mistakes(rs, gt)
        rows.append({"model": str(model_dir), "photo": p.id, "regions": len(rs.regions),
                     "expected": rs.expected_mistakes(), "actual": int(wrong.sum()),
                     "expected_first": rs.expected_mistakes(FIRST), "actual_first": int(wrong[:FIRST].sum())})
        r = rows[-1]
        print(f"{p.id:10s} {r['regions']:7d} {r['expected']:9.1f} {r['actual']:7d} {r['expected_first']:9.1f} "
              f"{r['actual_first']:7d}", flush=True)
    return rows


def summary(rows: list[dict]) -> dict:
    out: dict = {"photos": len(rows)}
    for k in ("", "_first"):
        e = np.array([r["expected" + k] for r in rows])
        a = np.array([r["actual" + k] for r in rows])
        out[f"expected{k}"], out[f"actual{k}"] = float(e.sum()), int(a.sum())
        out[f"corr{k}"] = float(np.corrcoef(e, a)[0, 1]) if len(rows) > 2 else float("nan")
        out[f"median_abs_diff{k}"] = float(np.median(np.abs(e - a)))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", type=Path, required=True, help="fold models' oof/ folders")
    ap.add_argument("--images", type=Path, default=HERE.parent.parent / "shared" / "data" / "idrid" / "train")
    ap.add_argument("--cache", type=Path, default=None, help="prepared working-grid arrays (compare_presets')")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    print(f"{'photo':10s} {'regions':>7s} {'expected':>9s} {'actual':>7s} {'exp. 20':>9s} {'act. 20':>7s}")
    rows = [r for m in args.models for r in one_model(m, args.images, args.cache)]
    s = summary(rows)
    print(f"{s['photos']} photos: likely mistakes expected {s['expected']:.0f}, actual {s['actual']} (per photo: "
          f"r {s['corr']:.2f}, median |diff| {s['median_abs_diff']:.1f}); in the first {FIRST} rows expected "
          f"{s['expected_first']:.0f}, actual {s['actual_first']} (r {s['corr_first']:.2f}, median |diff| "
          f"{s['median_abs_diff_first']:.1f})")
    args.out.write_text(json_text({"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or
                                    platform.machine(), "models": [str(m) for m in args.models],
                                    "summary": s, "rows": rows}, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
