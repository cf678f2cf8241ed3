"""Compare the methods at an equal CPU budget on our IDRiD validation split.

One host network (a small DynSegNet U-Net: ResNet-18 encoder of width 16, ASPP, attention
gates, residual decoder) trained the same way, switching one component at a time:
standard | + PatchGAN (spectral norm) | + SegAN critic | DALE | + SGDC. Each variant gets the
same wall-clock budget on this machine; the best checkpoint's validation AUPR and Dice (whole
working-grid images, ARCHITECTURE's validation) are tabulated. Prints a table and writes
results/compare_presets.json.

    python benchmarks/compare_presets.py --minutes 20 [--images ../shared/data/idrid/train] [--cache DIR] [--only dale,sgdc]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "idrid" / "train"

HOST = [
    'model.network.arch="dynsegnet_unet"', "model.network.in_channels=4", "model.network.attention_gates=true",
    "model.network.residual_decoder=true", "model.network.decoder_channels=[64,32,32,16]",
    'model.network.encoder={"type": "resnet18", "width": 16}', "model.network.aspp.channels=64",
    'model.network.dynamic={"mode": "off"}', 'adversary.type="none"', "data.batch_size=4",
]
VARIANTS = {
    "standard": [],
    "patchgan": ['adversary.type="patchgan"', "adversary.weight=0.5", 'adversary.patchgan={"ndf": 32}',
                 'model.network.dynamic={"mode": "gates"}'],
    "segan_critic": ['adversary.type="segan_critic"', "adversary.weight=1.0",
                     'adversary.segan_critic={"ndf": 32, "clamp": 0.05}'],
    "dale": ['paradigm.type="dale"', 'paradigm.dale={"partition_every": 300}'],
    "sgdc": ['model.network.sgdc={"enabled": true, "bottleneck": 64, "guide_ch": 16, "kernel": 5}'],
}


def main() -> None:
    from lesionseg_training.train_config import load_config
    from lesionseg_training.trainer import train

    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--images", default=str(DATA))
    ap.add_argument("--out", default=str(HERE / "results" / "compare_runs"))
    ap.add_argument("--cache", default=None, help="folder for prepared working-grid arrays (reused between variants)")
    ap.add_argument("--only", default=None, help="comma-separated subset of " + ",".join(VARIANTS))
    args = ap.parse_args()
    names = args.only.split(",") if args.only else list(VARIANTS)
    rows = []
    for name in names:
        cfg = load_config("default", [f'data.images="{args.images}"', f"run.minutes={args.minutes}",
                                      "run.steps=100000", "run.eval_every=250", f'model.name="cmp-{name}"',
                                      *([f'data.cache_dir="{args.cache}"'] if args.cache else []),
                                      *HOST, *VARIANTS[name]])
        t0 = time.time()
        best = {"val_aupr": float("nan"), "val_dice": float("nan")}
        steps = 0
        for ev in train(cfg, Path(args.out) / name):
            if ev.get("event") == "eval":
                steps = ev["step"]
                if not ev["val_aupr"] <= best["val_aupr"]:
                    best = {"val_aupr": ev["val_aupr"], "val_dice": ev["val_dice"], "step": ev["step"]}
        rows.append({"variant": name, **best, "steps": steps, "minutes": round((time.time() - t0) / 60, 1)})
        print(rows[-1], flush=True)
    results = HERE / "results" / "compare_presets.json"
    if args.only and results.exists():  # a re-run of some variants keeps the others' rows
        old = json.loads(results.read_text())
        if old.get("minutes") == args.minutes:
            fresh = {r["variant"] for r in rows}
            rows = [r if r["variant"] not in fresh else next(x for x in rows if x["variant"] == r["variant"])
                    for r in old["rows"]] + [r for r in rows if r["variant"] not in {x["variant"] for x in old["rows"]}]
    print(f"{'variant':14s} {'val AUPR':>9s} {'val Dice':>9s} {'steps':>6s} {'min':>5s}")
    for r in rows:
        print(f"{r['variant']:14s} {r['val_aupr']:9.3f} {r['val_dice']:9.3f} {r['steps']:6d} {r['minutes']:5.1f}")
    results.parent.mkdir(exist_ok=True)
    results.write_text(json.dumps({"minutes": args.minutes, "rows": rows, "date": time.strftime("%Y-%m-%d")}, indent=2))


if __name__ == "__main__":
    main()
