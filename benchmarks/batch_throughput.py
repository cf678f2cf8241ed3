"""Benchmark: photos per minute over a folder with the shipped default model, as
``lesionseg predict <folder>`` runs it (``predict_files``: the next photo is read in a
background thread while the current one computes; mask/probability/fuzzy PNGs, lesion and
summary CSVs written) against the same work done strictly one step after another. Photos:
the first ``--n`` of ``../shared/data/idrid_unlabeled/images`` (4288x2848 JPEGs). Prints a
table and writes results/batch_throughput.json.

    python benchmarks/batch_throughput.py [--n 12] [--tta flips|hflip|none] [--images DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from napari_lesionseg.core.jsonfile import json_text

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "idrid_unlabeled" / "images"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--tta", default=None, help="default: the model's setting")
    ap.add_argument("--images", default=str(DATA))
    args = ap.parse_args()

    import torch

    from napari_lesionseg.core.runtime import tune_allocator

    tune_allocator()  # as `lesionseg predict` sets its process up (cli.run_command); missing before 2026-12-08
    from napari_lesionseg.core.batch import collect_images, predict_files
    from napari_lesionseg.core.bundled import default_model_dir
    from napari_lesionseg.core.image_io import read_image
    from napari_lesionseg.core.inference import predict, run_to_end
    from napari_lesionseg.core.model_folder import load_model_folder
    from napari_lesionseg.core.outputs import write_prediction

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    model = load_model_folder(default_model_dir())
    tta = args.tta or model.config.inference.tta
    paths = collect_images([args.images])[: args.n]
    if not paths:
        raise SystemExit(f"no images in {args.images}")
    tmp = Path(tempfile.mkdtemp())
    run_to_end(predict(model, read_image(paths[0])[0], tta=tta))  # warm-up, not counted

    def sequential() -> float:
        out = tmp / "sequential"
        t0 = time.perf_counter()
        for p in paths:
            rgb, _ = read_image(p)
            write_prediction(out, p.stem, run_to_end(predict(model, rgb, tta=tta)))
        return time.perf_counter() - t0

    def read_ahead() -> float:
        out = tmp / "read_ahead"
        t0 = time.perf_counter()
        res = run_to_end(predict_files(model, paths, out, tta=tta))
        assert len(res.done) == len(paths), res.failures
        return time.perf_counter() - t0

    rows = []
    for name, fn in (("sequential", sequential), ("read-ahead (product)", read_ahead)):
        secs = fn()
        rows.append({"variant": name, "photos": len(paths), "seconds": secs,
                     "s_per_photo": secs / len(paths), "photos_per_min": 60 * len(paths) / secs})
    shutil.rmtree(tmp, ignore_errors=True)
    cpu = next((ln.split(":")[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), "?") if Path("/proc/cpuinfo").exists() else "?"
    print(f"{len(paths)} photos from {args.images} (tta {tta}; {cpu}, {len(os.sched_getaffinity(0))} cores)")
    print(f"{'variant':22s} {'seconds':>8s} {'s/photo':>8s} {'photos/min':>11s}")
    for r in rows:
        print(f"{r['variant']:22s} {r['seconds']:8.1f} {r['s_per_photo']:8.2f} {r['photos_per_min']:11.1f}")
    (HERE / "results").mkdir(exist_ok=True)
    out = {"images": args.images, "n": len(paths), "tta": tta, "cpu": cpu, "rows": rows,
           "date": time.strftime("%Y-%m-%d %H:%M")}
    (HERE / "results" / "batch_throughput.json").write_text(json_text(out, indent=2))
    print(f"wrote {HERE / 'results' / 'batch_throughput.json'}")


if __name__ == "__main__":
    main()
