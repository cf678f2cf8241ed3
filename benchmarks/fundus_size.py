"""How small a fundus the models can segment: the bundled sample photos (which the shipped default
never trained on) shrunk so that the fundus is D px across, each segmented, its hemorrhage mask
scored against the annotation shrunk alike (a pixel is a lesion when a quarter of it was).
What ``fov.SMALL_FUNDUS_PX`` (a note) and ``fov.MIN_FUNDUS_PX`` (a refusal) are set between.
The refusal is lifted for the run (``fov.MIN_FUNDUS_PX = 0``) so that every size is segmented.

    python benchmarks/fundus_size.py [--model default]

Prints, per photo and size, the Dice and the lesions found against the lesions annotated;
writes ``results/fundus_size.json``.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
from PIL import Image

from napari_lesionseg.core import fov as fov_module
from napari_lesionseg.core.bundled import SAMPLES, resolve_model, sample_paths
from napari_lesionseg.core.image_io import read_image, read_mask
from napari_lesionseg.core.inference import predict, run_to_end
from napari_lesionseg.core.jsonfile import json_text
from napari_lesionseg.core.lesions import label_runs
from napari_lesionseg.core.model_folder import load_model_folder

HERE = Path(__file__).resolve().parent
SIZES = (1900, 300, 200, 150, 100, 75, 50, 32)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "fundus_size.json")
    args = ap.parse_args(argv)
    fov_module.MIN_FUNDUS_PX = 0  # score the sizes the product refuses too
    model = load_model_folder(resolve_model(args.model))
    rows = []
    print(f"{'photo':10s} {'D px':>6s} {'size':>10s} {'dice':>6s} {'found':>6s} {'annotated':>9s}")
    for key in SAMPLES:
        img, mask = sample_paths(key)
        rgb, _ = read_image(img)
        gt = read_mask(mask) == 1
        full = 2 * fov_module.detect_fov(rgb).radius
        for d in SIZES:
            s = min(1.0, d / full)
            size = (max(1, round(rgb.shape[1] * s)), max(1, round(rgb.shape[0] * s)))
            small = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BOX))
            truth = np.asarray(Image.fromarray(gt.astype(np.float32)).resize(size, Image.Resampling.BOX)) > 0.25
            found = run_to_end(predict(model, small)).mask == 1
            dice = 2 * int(np.count_nonzero(found & truth)) / max(1, int(found.sum()) + int(truth.sum()))
            row = {"photo": key, "fundus_px": d if s < 1 else round(full), "width": size[0], "height": size[1],
                   "dice": round(dice, 3), "lesions_found": int(label_runs(found)[1]),
                   "lesions_annotated": int(label_runs(truth)[1])}
            rows.append(row)
            print(f"{key:10s} {row['fundus_px']:6d} {size[0]:>4d}x{size[1]:<5d} {dice:6.3f} {row['lesions_found']:6d} "
                  f"{row['lesions_annotated']:9d}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json_text({"model": model.version, "machine": platform.processor() or platform.machine(),
                                    "date": time.strftime("%Y-%m-%d"), "rows": rows}, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
