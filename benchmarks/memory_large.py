"""Benchmark: peak memory of ``predict`` + writing the outputs for a very large photo, to state
the memory bound. Builds a 10000x10000 JPEG from an IDRiD photo (scaled to 10000 px wide and
centred on black, so the disc is ~2.3x the IDRiD size) and an IDRiD photo as is; each is
predicted in a fresh process (peak RSS from getrusage). Prints a table and writes
results/memory_large.json.

    python benchmarks/memory_large.py [--image PATH] [--side 10000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from napari_lesionseg.core.jsonfile import json_text

HERE = Path(__file__).resolve().parent
DEFAULT_IMAGE = HERE.parent.parent / "shared" / "data" / "idrid" / "train" / "images" / "IDRiD_10.jpg"

WORKER = r"""
import json, resource, sys, tempfile, time
from pathlib import Path
from napari_lesionseg.core.bundled import default_model_dir
from napari_lesionseg.core.image_io import read_image
from napari_lesionseg.core.inference import predict, run_to_end
from napari_lesionseg.core.model_folder import load_model_folder
from napari_lesionseg.core.outputs import write_prediction
from napari_lesionseg.core.runtime import tune_allocator
tune_allocator()  # as `lesionseg predict` sets its process up (cli.run_command); missing before 2026-12-08
model = load_model_folder(default_model_dir())
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t0 = time.perf_counter()
rgb, _ = read_image(sys.argv[1])
pred = run_to_end(predict(model, rgb))
write_prediction(Path(tempfile.mkdtemp()), "big", pred)
print(json.dumps({"shape": list(rgb.shape[:2]), "work_shape": list(pred.geometry.work_shape),
                  "seconds": time.perf_counter() - t0, "rss_after_model_load_mb": base,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

MAKE_BIG = r"""
import sys
from PIL import Image
Image.MAX_IMAGE_PIXELS = None
src, side, dst = sys.argv[1], int(sys.argv[2]), sys.argv[3]
im = Image.open(src).convert("RGB")
h = round(im.height * side / im.width)
big = Image.new("RGB", (side, side))
big.paste(im.resize((side, h), Image.Resampling.BILINEAR), (0, (side - h) // 2))
big.save(dst, quality=92)
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--image", default=str(DEFAULT_IMAGE))
    ap.add_argument("--side", type=int, default=10000)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    big_path = tmp / f"big{args.side}.jpg"
    # made in a child process: ru_maxrss survives fork+exec, so this process must stay small
    subprocess.run([sys.executable, "-c", MAKE_BIG, args.image, str(args.side), str(big_path)], check=True)
    rows = []
    for path in (args.image, str(big_path)):
        out = subprocess.run([sys.executable, "-c", WORKER, path], check=True, capture_output=True, text=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        px = r["shape"][0] * r["shape"][1]
        r["bytes_per_input_px"] = (r["peak_rss_mb"] - r["rss_after_model_load_mb"]) * 2**20 / px
        rows.append(r)
    print(f"{'input':>13s} {'work grid':>10s} {'seconds':>8s} {'base MB':>8s} {'peak MB':>8s} {'B/input px':>10s}")
    for r in rows:
        print(f"{'x'.join(map(str, r['shape'])):>13s} {'x'.join(map(str, r['work_shape'])):>10s} {r['seconds']:8.1f} "
              f"{r['rss_after_model_load_mb']:8.0f} {r['peak_rss_mb']:8.0f} {r['bytes_per_input_px']:10.1f}")
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "memory_large.json").write_text(json_text(
        {"image": args.image, "side": args.side, "rows": rows, "date": time.strftime("%Y-%m-%d %H:%M")}, indent=2))
    print(f"wrote {HERE / 'results' / 'memory_large.json'}")


if __name__ == "__main__":
    main()
