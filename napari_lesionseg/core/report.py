"""The small evaluation report: metrics JSON, per-image CSV and a PR-curve PNG."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from .atomic import atomic_write_bytes, atomic_write_text
from .jsonfile import json_text
from .metrics import DatasetScores
from .outputs import csv_text


def pr_curve_png(ds: DatasetScores, title: str) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.5, 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if ds.pr is not None and ds.pr.pos.sum():
        precision, recall, _ = ds.pr.curve()
        ax.step(recall, precision, where="post", color="tab:red")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def report_path(out: str | Path) -> Path:
    """Where ``evaluate --out`` writes its JSON: ``out`` itself when it names a file
    (``report.json``), else ``out/metrics.json``: a folder there already, or a name without a
    suffix (``results``, ``results/``, which once became a JSON file called ``results``);
    checked writable before any photo is segmented (a folder once failed after the whole
    evaluation, naming a temporary file)."""
    from .batch import writable_folder

    out = Path(out)
    folder = out.is_dir() or (not out.suffix and not out.exists())
    path = out / "metrics.json" if folder else out
    writable_folder(path.parent)
    return path


def write_report(out_json: Path, ds: DatasetScores, extra: dict[str, Any]) -> list[Path]:
    """``out_json`` (summary + per image), ``<stem>_per_image.csv`` and ``<stem>_pr.png``."""
    summary = ds.summary()
    payload = {**extra, "summary": summary, "per_image": ds.per_image}
    out_json.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_json, json_text(payload, indent=2))
    csv_path = out_json.with_name(out_json.stem + "_per_image.csv")
    cols = ["image", "dice", "iou", "precision", "recall", "accuracy", "hd95", "gt_pixels", "pred_pixels"]
    atomic_write_text(csv_path, csv_text(ds.per_image, cols))
    png = out_json.with_name(out_json.stem + "_pr.png")
    atomic_write_bytes(png, pr_curve_png(ds, f"pooled AUPR {summary['aupr']:.3f}, Dice {summary['dice_ds']:.3f}"))
    return [out_json, csv_path, png]
