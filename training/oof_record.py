"""A recipe's out-of-fold figures, written into a model folder's ``metrics.json``.

A model folder's ``val_*`` figures come from the photos that also chose its checkpoint,
calibration and threshold: in-sample, optimistic. What a user should read is how the recipe
does on photos it never saw: the cross-validation of ``benchmarks/compare_presets.py --full-res``,
pooled by ``benchmarks/oof_report.py`` (every annotated photo scored by the one fold model that
never trained on it). This puts that report's figures for one recipe under ``out_of_fold`` and
says which figures are which; everything else in ``metrics.json`` is kept::

    python -m lesionseg_training.oof_record --model napari_lesionseg/models/default \\
        --report benchmarks/results/oof_folds01234.json --variant default \\
        --note "this folder trained 2383 steps, the folds 1000: ..."
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from napari_lesionseg.core.atomic import atomic_write_text
from napari_lesionseg.core.errors import LesionsegInputError
from napari_lesionseg.core.jsonfile import json_text
from napari_lesionseg.core.model_folder import METRICS

IN_SAMPLE = ("the validation photos that also chose this model's checkpoint, calibration and threshold "
             "(in-sample, optimistic)")
OUT_OF_FOLD_FIT = ("the recipe's fold models' pooled predictions on photos each never saw, which the calibration "
                   "and threshold were fitted on (out of fold, but chosen on them: slightly optimistic)")


def figures_note(metrics: dict[str, Any]) -> str:
    """What each group of figures in ``metrics`` rests on, said for the groups it has: the
    ``val_*`` figures are in-sample; ``calibration.val_*`` are in-sample unless the calibration
    was fitted out of fold (``lesionseg_training.oof_calibrate``); ``out_of_fold`` is the recipe
    on photos its fold models never saw."""
    parts = []
    if any(k.startswith("val_") and k != "val_images" for k in metrics):
        parts.append(f"val_*: {IN_SAMPLE}")
    cal = metrics.get("calibration")
    if isinstance(cal, dict) and any(k.startswith("val_") for k in cal):
        parts.append("calibration.val_*: " + (OUT_OF_FOLD_FIT if cal.get("fitted_on") == "out_of_fold" else IN_SAMPLE))
    if "out_of_fold" in metrics:
        parts.append("out_of_fold: the recipe on photos its fold models never saw, each photo scored once")
    return "; ".join(parts)
_FIGURES = {"aupr": "aupr", "dice_ds": "dice_dataset", "dice_img": "dice_per_image", "photos": "photos",
            "fold_aupr": "fold_aupr", "fold_dice_ds": "fold_dice_dataset", "lesion_recall": "lesion_recall",
            "lesion_precision": "lesion_precision"}


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LesionsegInputError(path, f"no {what} here") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LesionsegInputError(path, f"is not a readable {what} ({err})") from None
    if not isinstance(data, dict):
        raise LesionsegInputError(path, f"is not a {what} (not a JSON object)")
    return data


def out_of_fold_block(report: dict[str, Any], variant: str, source: str, note: str = "") -> dict[str, Any]:
    """The ``out_of_fold`` entry for ``variant`` of an ``oof_report`` JSON."""
    entry = report["variants"][variant]
    outputs = {t: {new: v[old] for old, new in _FIGURES.items() if old in v}
               for t, v in entry.items() if isinstance(v, dict)}
    # a ``name@steps`` variant carries its own budget; the report's ``steps`` is --steps, the default
    view = str(entry.get("tta") or "")
    if view.startswith("grids"):  # ``oof_report`` ``name:grids704+1024``: the model's own TTA on more grids
        tta = (f"{'no TTA' if entry.get('members') else 'its own TTA'} on its working grid and on grids of "
               f"{' and '.join(view[len('grids'):].split('+'))} px across the disc, averaged")
    else:
        tta = {"none": "no TTA", "hflip": "2-view (horizontal flip) TTA"}.get(view, "4-flip TTA")
    if entry.get("members"):
        tta = (f"the mean of {len(entry['members'])} fold models' probabilities (recipes "
               f"{', '.join(entry['members'])}), each with {tta}")
    block = {"recipe": variant, "steps": entry.get("steps", report.get("steps")), "folds": entry["folds"],
             "scored": "each photo by the fold model that never trained on it, calibrated on its own training "
                       f"photos; full resolution, {tta}, 8-bit probabilities; outputs pooled over the folds",
             "outputs": outputs, "date": report.get("date"), "machine": report.get("machine"), "source": source}
    if note:
        block["note"] = note
    return block


def record_out_of_fold(model_dir: Path, report_path: Path, variant: str, note: str = "") -> dict[str, Any]:
    """Write ``variant``'s out-of-fold figures from ``report_path`` into ``model_dir``'s
    ``metrics.json`` (atomically; every other key kept). Returns the new metrics."""
    metrics_path = Path(model_dir) / METRICS
    metrics = _read_json(metrics_path, "model metrics file")
    report = _read_json(Path(report_path), "out-of-fold report")
    variants = report.get("variants")
    if not isinstance(variants, dict) or variant not in variants:
        known = ", ".join(sorted(variants)) if isinstance(variants, dict) else "none"
        raise LesionsegInputError(report_path, f"has no recipe '{variant}' (it has: {known})")
    metrics["out_of_fold"] = out_of_fold_block(report, variant, Path(report_path).as_posix(), note)
    metrics["figures"] = figures_note(metrics)
    atomic_write_text(metrics_path, json_text(metrics, indent=2))
    return metrics


def main(argv: list[str] | None = None) -> int:
    from napari_lesionseg.cli import run_command

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, required=True, help="the model folder whose metrics.json to update")
    ap.add_argument("--report", type=Path, required=True, help="an oof_report.py JSON")
    ap.add_argument("--variant", required=True, help="the recipe of the report this model was trained with")
    ap.add_argument("--note", default="", help="how this folder's training differs from the folds', if it does")
    return run_command(_record, ap.parse_args(argv))


def _record(args: argparse.Namespace) -> int:
    m = record_out_of_fold(args.model, args.report, args.variant, args.note)
    he = m["out_of_fold"]["outputs"].get("HE", {})
    print(f"{args.model / METRICS}: out-of-fold HE AUPR {he.get('aupr', float('nan')):.3f} over "
          f"{he.get('photos', 0)} photos (folds {m['out_of_fold']['folds']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
