"""Benchmark: the tuned networks with the U-Net decoders' joins rewritten
(``models.fuse.JoinBlock``, what ``lesionseg predict`` runs since 2026-12-06: the upsampling as a
transposed convolution, no concatenation) against the same tuned networks with PyTorch's
upsampling and the concatenation (BatchNorm folded and conv+ReLU fused either way).

For each bundled model (or ``--model`` folders), one full IDRiD photo is brought onto the
working grid as ``predict`` does, and each network of the model runs on it (one tile, the
default's none-TTA view) both ways in turn, A B A B ..., in one process on all cores, in the
precision ``predict`` would choose here (``--precision``); the joins are turned on for this run
in fp32 and bf16 whatever ``fuse.JOIN_DTYPES`` holds (``predict`` joins in the precisions this
benchmark measured faster: fp32 on an AVX2 CPU, bf16 on a Xeon with AMX). Prints per network the
median time of each way and the median of the pair ratios (joins / concatenation), the largest
difference in logits between the two, and in bf16 each way's difference from the fp32 logits
(is the joins' difference bf16's own?); writes JSON (results/decoder_joins.json unless
``--results``).

    python benchmarks/decoder_joins.py [--image PATH] [--pairs 9] [--model DIR ...]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from predict_speed import DEFAULT_IMAGE, cpu_description

from napari_lesionseg.core.bundled import bundled_model_dir
from napari_lesionseg.core.inference import inference_net
from napari_lesionseg.core.jsonfile import json_text
from napari_lesionseg.core.model_folder import load_model_folder
from napari_lesionseg.core.models.ensemble import members
from napari_lesionseg.core.models.fuse import JOIN_DTYPES, fold_batchnorm, fuse_conv_relu
from napari_lesionseg.core.preprocess import prepare
from napari_lesionseg.core.runtime import autocast, autocast_dtype, default_threads

HERE = Path(__file__).resolve().parent


def with_concatenation(net: torch.nn.Module) -> torch.nn.Module:
    """The tuned copy as it was before the joins: BatchNorm folded, conv+ReLU fused."""
    fused = fold_batchnorm(net)[0]
    fuse_conv_relu(fused)
    return fused


def one_model(folder: Path, rgb: np.ndarray, pairs: int, precision: str) -> list[dict]:
    model = load_model_folder(folder)
    pre = model.config.preprocess
    x, _, _ = prepare(rgb, pre.fov_diameter, pre.green_contrast_sigma)
    stride = model.config.network.stride
    ph, pw = (-x.shape[1]) % stride, (-x.shape[2]) % stride
    t = F.pad(torch.from_numpy(x)[None], (0, pw, 0, ph)).contiguous(memory_format=torch.channels_last)
    dtype = autocast_dtype(precision, torch.device("cpu"))
    rows = []
    for k, member in enumerate(members(model.net)):
        joins = inference_net(member).to(memory_format=torch.channels_last).eval()
        n_joins = sum(getattr(m, "takes_pair", False) for m in joins.modules())
        concat = with_concatenation(member).to(memory_format=torch.channels_last).eval()
        times: dict[str, list[float]] = {"joins": [], "concatenation": []}
        outs = {}
        with torch.inference_mode(), autocast(torch.device("cpu"), dtype):
            for name, net in (("joins", joins), ("concatenation", concat)):
                outs[name] = net(t).logits.float()  # warm-up, and the logits compared
        if dtype is not None:  # each way against the fp32 logits: is the joins' difference bf16's own?
            with torch.inference_mode():
                ref = concat(t).logits.float()
            drift = {name: {"max_abs_logit_diff": float((o - ref).abs().max()),
                            "max_abs_prob_diff": float((o.sigmoid() - ref.sigmoid()).abs().max()),
                            "mean_abs_prob_diff": float((o.sigmoid() - ref.sigmoid()).abs().mean())}
                     for name, o in outs.items()}
        with torch.inference_mode(), autocast(torch.device("cpu"), dtype):
            for _ in range(pairs):
                for name, net in (("joins", joins), ("concatenation", concat)):
                    t0 = time.perf_counter()
                    net(t)
                    times[name].append(time.perf_counter() - t0)
        ratios = [a / b for a, b in zip(times["joins"], times["concatenation"])]
        rows.append({"model": str(folder), "network": k, "tile": list(t.shape[-2:]), "joins": n_joins,
                     "precision": {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype],
                     "joins_median_s": statistics.median(times["joins"]),
                     "concatenation_median_s": statistics.median(times["concatenation"]),
                     "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
                     "max_abs_logit_diff": float((outs["joins"] - outs["concatenation"]).abs().max()),
                     **({"vs_fp32": drift} if dtype is not None else {})})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--image", default=str(DEFAULT_IMAGE))
    ap.add_argument("--pairs", type=int, default=9)
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    ap.add_argument("--model", nargs="*", help="model folders (default: the bundled default and multi)")
    ap.add_argument("--results", default=str(HERE / "results" / "decoder_joins.json"))
    args = ap.parse_args()
    torch.set_num_threads(default_threads())
    JOIN_DTYPES.update({torch.float32, torch.bfloat16})  # measure the rewrite in either precision
    rgb = np.asarray(Image.open(args.image).convert("RGB"))
    folders = [Path(m) for m in args.model] if args.model else [bundled_model_dir("default"), bundled_model_dir("multi")]
    rows = [r for f in folders for r in one_model(f, rgb, args.pairs, args.precision)]
    cpu = cpu_description()
    print(f"image {args.image}; CPU: {cpu}; {default_threads()} threads; {args.pairs} pairs, A B A B")
    print(f"{'model':>10} {'net':>3} {'prec':>5} {'joins':>5} {'joins s':>8} {'concat s':>9} {'ratio':>6} "
          f"{'min':>6} {'max':>6} {'max |dlogit|':>12}")
    for r in rows:
        print(f"{Path(r['model']).name:>10} {r['network']:>3} {r['precision']:>5} {r['joins']:>5} "
              f"{r['joins_median_s']:8.3f} {r['concatenation_median_s']:9.3f} {r['ratio_median']:6.3f} "
              f"{r['ratio_min']:6.3f} {r['ratio_max']:6.3f} {r['max_abs_logit_diff']:12.2e}")
    drifts = [r for r in rows if "vs_fp32" in r]
    if drifts:
        print("each way against the fp32 concatenation (max |dlogit|, max |dp|, mean |dp|):")
        for r in drifts:
            cells = "  ".join(f"{name} {d['max_abs_logit_diff']:.2e} {d['max_abs_prob_diff']:.2e} {d['mean_abs_prob_diff']:.1e}"
                              for name, d in r["vs_fp32"].items())
            print(f"{Path(r['model']).name:>10} {r['network']:>3}  {cells}")
    dest = Path(args.results)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json_text({"image": args.image, "cpu": cpu, "threads": default_threads(), "pairs": args.pairs,
                                "torch": torch.__version__, "rows": rows}, indent=2))
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
