"""Benchmark: predict one full IDRiD photo end to end with the shipped default model.

Each variant runs in its own process (the allocator setting is per process):
- ``tuned``: the product's path (``lesionseg predict``'s code: glibc mallopt, BatchNorm folded,
  channels_last, inference_mode, bf16 autocast on a CPU with native bf16 and the TTA views two
  at a time), read + FOV + inference + PNG/CSV writing;
- ``plain``: the same network on the same tiles the plain way (the model as trained, BatchNorm and
  ReLU as separate layers; eager, NCHW, fp32, default
  allocator, no_grad), same preprocessing and writing.
Prints a table (median, min, max over the runs; ratio; the network's GFLOP/s as % of the CPU's
peak for the precision it ran in; peak RSS) and writes JSON next to this script
(results/predict_speed.json, or results/predict_speed_<tta>_<precision>.json for other settings).

Two peaks are given: the nominal one the performance issue states for this machine (2 Zen 5
cores at 3.45 GHz: 442 GFLOP/s fp32, 883 bf16; override with --peak-fp32/--peak-bf16) and the
rate PyTorch's own 4096x4096 matrix product reaches here in the same precision (measured at the
start, so a slower or shared CPU shows up in both).

    python benchmarks/predict_speed.py [--image PATH] [--runs 7] [--tta flips|hflip|none]
                                       [--precision auto|fp32|bf16] [--model DIR]

``--model``: another model folder than the bundled default (e.g. a candidate recipe's fold
model, to see what it would cost before it is trained in full); its JSON is then
results/predict_speed_<parent>_<folder>_<tta>_<precision>.json: a second measurement of the same
folder replaces it, so name a kept one with ``--results FILE``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_IMAGE = HERE.parent.parent / "shared" / "data" / "idrid" / "train" / "images" / "IDRiD_10.jpg"


def cpu_description() -> str:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    first = lambda key: next((ln.split(":", 1)[1].strip() for ln in info.splitlines()  # noqa: E731
                              if ln.split(":")[0].strip() == key), "?")
    flags = first("flags").split()
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return (f"{first('model name')} (family {first('cpu family')} model {first('model')}), "
            f"{len(os.sched_getaffinity(0))} cores, {'+'.join(isa)}")


def gemm_gflops(dtype_name: str, n: int = 4096, reps: int = 5) -> float:
    """Best rate of an n x n matrix product on all cores: what this CPU's BLAS reaches."""
    import torch

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    dt = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    a, b = torch.randn(n, n).to(dt), torch.randn(n, n).to(dt)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def process_setup(variant: str) -> bool:
    """The worker process set up as ``variant`` runs: ``tuned`` as `lesionseg predict` does first
    (``cli.run_command``: the glibc allocator tuned), ``plain`` with the default allocator.
    Returns whether the allocator was tuned. Left out from 2026-11-29 to 2026-12-08: the tuned
    figures of those days are those of a process without it (benchmarks/README.md)."""
    from napari_lesionseg.core.runtime import tune_allocator

    return tune_allocator() if variant == "tuned" else False


def worker(variant: str, image: str, runs: int, tta: str, precision: str, out_json: str, model_dir: str,
           locate_disc: bool = True) -> None:
    import resource

    import numpy as np
    import torch

    from napari_lesionseg.core.image_io import read_image
    from napari_lesionseg.core.inference import predict, run_to_end
    from napari_lesionseg.core.model_folder import load_model_folder
    from napari_lesionseg.core.outputs import write_prediction

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    allocator_tuned = process_setup(variant)
    model = load_model_folder(model_dir)
    times, net_times, disc_times = [], [], []
    pred = None
    out_dir = Path(tempfile.mkdtemp())
    for _ in range(runs + 1):  # the first run warms up and is not counted
        t0 = time.perf_counter()
        rgb, _ = read_image(image)
        pred = run_to_end(predict(model, rgb, tta=tta, precision=precision, speedups=variant != "plain",
                                  locate_disc=locate_disc))
        write_prediction(out_dir, "bench", pred)
        times.append(time.perf_counter() - t0)
        net_times.append(pred.timings["network"])
        disc_times.append(pred.timings.get("disc", 0.0))  # placing the disc for a model without a disc output
    from torch.utils.flop_counter import FlopCounterMode

    from napari_lesionseg.core.inference import _views, n_views, tile_starts
    from napari_lesionseg.core.jsonfile import json_text
    from napari_lesionseg.core.preprocess import prepare

    pre, inf = model.config.preprocess, model.config.inference
    ts, st = inf.tile_size, model.config.network.stride
    flops, n_tiles, geom = 0, 0, None
    for grid in [pre.fov_diameter, *inf.extra_grids]:  # every working grid the model runs on
        x, g, _ = prepare(rgb, grid, pre.green_contrast_sigma)
        geom = geom or g
        h, w = min(ts, x.shape[1]), min(ts, x.shape[2])
        tile = torch.zeros(1, x.shape[0], h + (-h) % st, w + (-w) % st)
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            model.net.eval()(tile)
        tiles = len(tile_starts(x.shape[1], ts, inf.tile_overlap)) * len(tile_starts(x.shape[2], ts, inf.tile_overlap))
        n_tiles += tiles
        flops += fc.get_total_flops() * tiles * len(_views(tta))  # an ensemble's forward counts every member
    np.save(out_json + ".prob.npy", pred.probability)
    np.save(out_json + ".mask.npy", pred.mask)
    Path(out_json).write_text(json_text({
        "variant": variant, "allocator_tuned": allocator_tuned, "times": times[1:], "network_times": net_times[1:], "disc_times": disc_times[1:],
        "flops": flops,
        "work_shape": list(geom.work_shape), "tiles": n_tiles, "views": n_views(model.net, tta),
        "extra_grids": inf.extra_grids,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "timings_last": pred.timings, "precision": pred.precision,
    }))


def model_tta(model_dir: str) -> str:
    from napari_lesionseg.core.model_folder import load_model_folder

    return load_model_folder(model_dir).config.inference.tta


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--image", default=str(DEFAULT_IMAGE))
    ap.add_argument("--runs", type=int, default=7, help="timed runs after a warm-up (default 7: the issue's median of 7)")
    ap.add_argument("--tta", default=None, help="default: the model's setting")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"], help="the tuned path's")
    ap.add_argument("--peak-fp32", type=float, default=442.0, help="nominal fp32 GFLOP/s of all cores")
    ap.add_argument("--peak-bf16", type=float, default=883.0, help="nominal bf16 GFLOP/s of all cores")
    ap.add_argument("--model", default=None, help="a model folder (default: the bundled default model)")
    ap.add_argument("--results", default=None,
                    help="the JSON to write (default: results/predict_speed*.json named after the settings)")
    ap.add_argument("--no-disc", action="store_true",
                    help="a model without a disc output: leave its disc unplaced (core/disc_locator.py), to time that part")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    from napari_lesionseg.core.bundled import default_model_dir

    if args.model is None:
        args.model = str(default_model_dir())
    own_tta = model_tta(args.model)
    if args.tta is None:
        args.tta = own_tta
    if args.worker:
        worker(args.worker, args.image, args.runs, args.tta, args.precision, args.out, args.model, not args.no_disc)
        return
    import numpy as np

    cpu = cpu_description()
    nominal = {"fp32": args.peak_fp32, "bf16": args.peak_bf16}
    from napari_lesionseg.core.runtime import cpu_has_bf16

    # bf16 is emulated without AVX512_BF16/AMX: a 4096^2 bf16 product then takes many minutes
    gemm = {"fp32": gemm_gflops("fp32"), "bf16": gemm_gflops("bf16") if cpu_has_bf16() else float("nan")}
    res = {}
    tmp = Path(tempfile.mkdtemp())
    for variant in ("plain", "tuned"):
        out = tmp / f"{variant}.json"
        subprocess.run([sys.executable, __file__, "--worker", variant, "--image", args.image, "--runs",
                        str(args.runs), "--tta", args.tta, "--precision", args.precision, "--out", str(out),
                        "--model", args.model, *(["--no-disc"] if args.no_disc else [])],
                       check=True)
        res[variant] = json.loads(out.read_text())
    p_plain, p_tuned = np.load(tmp / "plain.json.prob.npy"), np.load(tmp / "tuned.json.prob.npy")
    m_plain, m_tuned = np.load(tmp / "plain.json.mask.npy"), np.load(tmp / "tuned.json.mask.npy")
    inter = float(np.logical_and(m_plain, m_tuned).sum())
    dice = 2 * inter / max(float(m_plain.sum() + m_tuned.sum()), 1.0)
    rows = []
    for v in ("plain", "tuned"):
        r = res[v]
        med = statistics.median(r["times"])
        net_med = statistics.median(r["network_times"])
        prec = "bf16" if r["precision"] == "bf16" else "fp32"
        rate = r["flops"] / 1e9 / net_med
        rows.append({"variant": v, "precision": r["precision"], "median_s": med, "min_s": min(r["times"]),
                     "max_s": max(r["times"]), "network_median_s": net_med,
                     "disc_median_s": statistics.median(r["disc_times"]), "gflop": r["flops"] / 1e9,
                     "gflops_per_s": rate, "pct_of_nominal_peak": 100 * rate / nominal[prec],
                     "pct_of_gemm": 100 * rate / gemm[prec], "peak_rss_mb": r["peak_rss_mb"],
                     "timings_last": r["timings_last"]})
    speedup = rows[0]["median_s"] / rows[1]["median_s"]
    print(f"model {args.model}\nimage {args.image} (tta {args.tta}, {args.runs} runs each)\nCPU: {cpu}; nominal peak fp32 "
          f"{nominal['fp32']:.0f} / bf16 {nominal['bf16']:.0f} GFLOP/s; 4096^2 matmul here: fp32 {gemm['fp32']:.0f} / "
          f"bf16 {gemm['bf16']:.0f} GFLOP/s")
    print(f"{'variant':8s} {'prec':>5s} {'median s':>9s} {'min s':>7s} {'max s':>7s} {'net s':>7s} {'disc s':>7s} "
          f"{'GFLOP':>6s} "
          f"{'GFLOP/s':>8s} {'%nominal':>9s} {'%matmul':>8s} {'RSS MB':>7s}")
    for r in rows:
        print(f"{r['variant']:8s} {r['precision']:>5s} {r['median_s']:9.3f} {r['min_s']:7.3f} {r['max_s']:7.3f} "
              f"{r['network_median_s']:7.3f} {r['disc_median_s']:7.3f} {r['gflop']:6.1f} {r['gflops_per_s']:8.1f} {r['pct_of_nominal_peak']:9.1f} "
              f"{r['pct_of_gemm']:8.1f} {r['peak_rss_mb']:7.0f}")
    print(f"end-to-end speed-up tuned vs plain: {speedup:.2f}x; probability max |diff| "
          f"{float(np.abs(p_plain - p_tuned).max()):.2e}; mask Dice {dice:.5f}")
    out = {"image": args.image, "model": args.model, "tta": args.tta, "runs": args.runs, "cpu": cpu,
           "nominal_peak_gflops": nominal,
           "matmul_gflops": gemm, "precision_requested": args.precision, "disc_placed": not args.no_disc,
           "python": platform.python_version(), "rows": rows, "speedup": speedup,
           "prob_max_abs_diff": float(np.abs(p_plain - p_tuned).max()), "mask_dice": dice,
           "work_shape": res["tuned"]["work_shape"], "tiles": res["tuned"]["tiles"],
           "timings_last_tuned": res["tuned"]["timings_last"], "date": time.strftime("%Y-%m-%d %H:%M")}
    (HERE / "results").mkdir(exist_ok=True)
    bundled = Path(args.model).resolve() == default_model_dir().resolve()
    tag = "" if bundled else "_".join(Path(args.model).resolve().parts[-2:]) + "_"
    default = bundled and args.tta == own_tta and args.precision == "auto"
    name = "predict_speed.json" if default else f"predict_speed_{tag}{args.tta}_{args.precision}.json"
    dest = Path(args.results) if args.results else HERE / "results" / name
    from napari_lesionseg.core.jsonfile import json_text

    dest.write_text(json_text(out, indent=2))  # strict JSON: an unmeasured bf16 rate is null, not NaN
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
