"""Benchmark: the decoder's upsampling by two as ``models.fuse.upsample2x`` (a depthwise
transposed convolution through oneDNN, what ``JoinBlock`` runs in fp32) against PyTorch's
``F.interpolate(..., mode="bilinear", align_corners=False)``, at the three sizes the shipped
networks' decoders upsample on IDRiD's 704x832 working grid, in fp32 and in bf16, channels_last,
A B A B in one process on all cores. Prints the medians, the median of the pair ratios and each
way's largest difference from fp32 interpolation; writes JSON (results/upsample2x.json unless
``--results``). Why ``JoinBlock`` takes the transposed convolution in fp32 only.

    python benchmarks/upsample2x.py [--reps 21] [--results FILE]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from predict_speed import cpu_description

from napari_lesionseg.core.jsonfile import json_text
from napari_lesionseg.core.models.fuse import upsample2x
from napari_lesionseg.core.runtime import default_threads

HERE = Path(__file__).resolve().parent
SIZES = ((32, 352, 416), (64, 176, 208), (128, 88, 104))  # channels, height, width before upsampling


def interpolate(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def one_size(c: int, h: int, w: int, dtype: torch.dtype, reps: int) -> dict:
    x = torch.randn(1, c, h, w).contiguous(memory_format=torch.channels_last)
    ref = interpolate(x)
    xd = x.to(dtype)
    ways = {"transposed_conv": upsample2x, "interpolate": interpolate}
    times: dict[str, list[float]] = {name: [] for name in ways}
    with torch.inference_mode():
        diff = {name: float((f(xd).float() - ref).abs().max()) for name, f in ways.items()}  # and a warm-up
        for _ in range(reps):
            for name, f in ways.items():
                t0 = time.perf_counter()
                f(xd)
                times[name].append(time.perf_counter() - t0)
    ratios = [a / b for a, b in zip(times["transposed_conv"], times["interpolate"])]
    return {"input": [c, h, w], "precision": {torch.float32: "fp32", torch.bfloat16: "bf16"}[dtype],
            **{f"{name}_median_ms": 1e3 * statistics.median(t) for name, t in times.items()},
            "ratio_median": statistics.median(ratios),
            **{f"{name}_max_abs_diff_vs_fp32": d for name, d in diff.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=21)
    ap.add_argument("--results", default=str(HERE / "results" / "upsample2x.json"))
    args = ap.parse_args()
    torch.set_num_threads(default_threads())
    rows = [one_size(*size, dtype, args.reps) for dtype in (torch.float32, torch.bfloat16) for size in SIZES]
    cpu = cpu_description()
    print(f"CPU: {cpu}; {default_threads()} threads; {args.reps} pairs, A B A B")
    print(f"{'input':>14} {'prec':>5} {'transposed ms':>13} {'interp ms':>9} {'ratio':>6} {'max |d| tc':>10} {'max |d| int':>11}")
    for r in rows:
        print(f"{'x'.join(map(str, r['input'])):>14} {r['precision']:>5} {r['transposed_conv_median_ms']:13.1f} "
              f"{r['interpolate_median_ms']:9.1f} {r['ratio_median']:6.2f} "
              f"{r['transposed_conv_max_abs_diff_vs_fp32']:10.2e} {r['interpolate_max_abs_diff_vs_fp32']:11.2e}")
    dest = Path(args.results)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json_text({"cpu": cpu, "threads": default_threads(), "reps": args.reps,
                               "torch": torch.__version__, "rows": rows}, indent=2))
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
