"""Benchmark: one-click fine-tuning on 5 corrected full IDRiD photos, end to end, as the
plugin runs it (``python -m lesionseg_training finetune --events jsonl`` in a subprocess),
from the shipped default model to a new model folder. The corrections are the photos' own
ground-truth masks. ``--minutes`` is the whole fine-tune's budget, as the button promises it
(scoring old and new, training, writing); the table says whether the click, process start
included, kept to it. ``--camera B`` first passes the photos through one of
``benchmarks/adapt.py``'s simulated cameras, so the fine-tune has something to learn and the
click runs its whole path (a checkpoint chosen, blended with the base, calibrated) instead of
keeping the base, as it does on photos the shipped model trained on. ``--model multi`` (or a
model folder) fine-tunes another base; the five-output model then learns from every type the
photos' IDRiD masks hold, as corrections saved for each type would teach it. Prints a table and
writes results/finetune_speed.json (``--out`` for another file).

    python benchmarks/finetune_speed.py [--minutes 2.0] [--ids IDRiD_01,IDRiD_02,...] [--camera B] [--model multi]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from napari_lesionseg.core.jsonfile import json_text

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "idrid" / "train"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=2.0, help="the whole fine-tune's budget (the button's default)")
    ap.add_argument("--ids", default="IDRiD_01,IDRiD_02,IDRiD_03,IDRiD_05,IDRiD_06")
    ap.add_argument("--camera", choices=("A", "B", "C"), help="pass the photos through this simulated camera first")
    ap.add_argument("--model", default=None, help="base model folder or bundled name (default: the shipped default)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "finetune_speed.json")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    ids = args.ids.split(",")
    if args.camera:
        sys.path.insert(0, str(HERE))
        from adapt import CAMERAS, _write_set

        _write_set(tmp, ids, CAMERAS[args.camera])
    else:
        (tmp / "images").mkdir()
        (tmp / "masks").mkdir()
        for i in ids:
            os.symlink(DATA / "images" / f"{i}.jpg", tmp / "images" / f"{i}.jpg")
            os.symlink(DATA / "masks_HE" / f"{i}_HE.tif", tmp / "masks" / f"{i}_HE.tif")
            for t in ("MA", "EX", "SE", "OD") if args.model else ():  # the other types beside it: <stem>_<T>.tif
                if (DATA / f"masks_{t}" / f"{i}_{t}.tif").is_file():
                    os.symlink(DATA / f"masks_{t}" / f"{i}_{t}.tif", tmp / "masks" / f"{i}_{t}.tif")
    cmd = [sys.executable, "-m", "lesionseg_training", "finetune", "--images", str(tmp / "images"), "--masks",
           str(tmp / "masks"), "--out", str(tmp / "new"), "--minutes", str(args.minutes), "--events", "jsonl",
           *(["--model", args.model] if args.model else [])]
    try:
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, check=True)
        total = time.perf_counter() - t0
        meta = json.loads((tmp / "new" / "metrics.json").read_text())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    events = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    steps = [e for e in events if e["event"] == "step"]
    fin = events[-1]
    train_s = steps[-1]["elapsed"] if steps else float("nan")
    row = {"model": args.model or "default", "photos": len(ids), "camera": args.camera, "budget_min": args.minutes,
           "total_s": round(total, 1),
           "train_s": train_s, "steps": len(steps), "s_per_step": round(train_s / max(len(steps), 1), 2),
           "crops_per_s": round(len(steps) * 4 / max(train_s, 1e-9), 2),
           "old_dice": fin.get("old_dice_ds"), "new_dice": fin.get("new_dice_ds"),
           "old_aupr": fin.get("old_aupr"), "new_aupr": fin.get("new_aupr"),
           "best_step": meta.get("best_step"), "blend": meta.get("blend", {}).get("base_share"), "within_budget": total <= 60 * args.minutes}
    print(f"{'photos':>6s} {'camera':>6s} {'budget s':>8s} {'total s':>8s} {'train s':>8s} {'steps':>6s} {'s/step':>7s} "
          f"{'crops/s':>8s} {'chosen':>6s} {'blend':>5s}  old->new Dice (held out)")
    print(f"{row['photos']:6d} {args.camera or '-':>6s} {60 * args.minutes:8.0f} {row['total_s']:8.1f} {row['train_s']:8.1f} "
          f"{row['steps']:6d} {row['s_per_step']:7.2f} {row['crops_per_s']:8.2f} {row['best_step']!s:>6s} "
          f"{row['blend'] or '-'!s:>5s}  {row['old_dice']:.3f} -> {row['new_dice']:.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json_text({**row, "date": time.strftime("%Y-%m-%d %H:%M")}, indent=2))


if __name__ == "__main__":
    main()
