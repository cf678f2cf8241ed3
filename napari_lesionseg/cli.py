"""``lesionseg``: predict / evaluate / train / finetune from the command line (and ``models``: a project's versions).

User errors (bad files, bad configs, missing folders, files that cannot be written: a
read-only or full disk, ``--out`` below a file) print one line ``error: ...`` naming the file
and exit with status 2; with ``--keep-going`` a batch continues past bad files, lists them at
the end and exits with status 1; a diverged training exits with 3, Ctrl-C with 130. Never a
bare traceback for a user error. :func:`run_command` is the one error policy, shared with
``python -m lesionseg_training``.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

EXIT_OK, EXIT_FAILURES, EXIT_USAGE, EXIT_DIVERGED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, default=None,
                   help="model folder, or a bundled model's name: default (hemorrhages), multi (four lesion "
                        "types and the optic disc); default: default")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | mps (default: auto)")
    p.add_argument("--tta", choices=["none", "hflip", "flips"], default=None,
                   help="test-time augmentation (default: the model's setting)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="network arithmetic: auto = bf16 on CPUs with native bf16 (AVX512_BF16/AMX), fp16 on "
                        "CUDA, fp32 elsewhere (default: auto)")
    p.add_argument("--extra-grids", default=None, metavar="PX,PX",
                   help="also run the network on these working grids (px across the fundus; the bundled models "
                        "work at 832), averaged: e.g. 704,1024, a network pass each (the bundled multi model: 1.5-1.9 "
                        "instead of 1.1 s a photo on 2 cores); the calibration and thresholds stay the model's, "
                        "fitted on its own grid (default: the model's inference.extra_grids)")


def _add_prob_bits(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--prob-bits", type=int, choices=[8, 16], default=8,
                   help=f"{what}: 8 = round(255 p), 16 = round(65535 p), which keeps the order of the many "
                        "low probabilities that 8 bits tie (precision-recall curves drawn from 16-bit files "
                        "scored 0.008-0.009 higher pooled AUPR on our folds; README) (default: 8)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lesionseg", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("gui", help="open napari with photos (default: the bundled sample) and the Segment dock",
                       description="Open napari with photos (default: the bundled sample) and the Segment dock.")
    p.add_argument("photos", nargs="*", help="photos or folders of photos to open, each photo its own layer, at most 20 "
                                             "(default: the bundled IDRiD sample)")
    p.add_argument("--project", type=Path, default=None,
                   help="project folder for corrections; without photos, a project that holds photos (e.g. filled "
                        "by predict --project) opens at its most uncertain photo, with Review lesions docked")
    p.set_defaults(func=cmd_gui)

    p = sub.add_parser("predict", help="segment photographs; writes masks, probabilities, fuzzy maps, CSVs")
    p.add_argument("inputs", nargs="+", help="image files or folders of images")
    p.add_argument("--out", type=Path, default=None, help="output folder (masks, probabilities, fuzzy maps, CSVs)")
    p.add_argument("--project", type=Path, default=None,
                   help="also keep each photo and its prediction in this plugin project folder (created if "
                        "needed): napari's Review lesions > Open next image then walks them most uncertain first, "
                        "with nothing to run; --model defaults to the project's active model")
    p.add_argument("-r", "--recursive", action="store_true",
                   help="also the photos in the folders' subfolders, at any depth (a clinic's patient folders); "
                        "the outputs mirror the subfolders (p1/OD.jpg -> OUT/p1/OD_mask.png ...) and the tables "
                        "name each photo by its path below the folder given")
    _add_model_args(p)
    p.add_argument("--mm-per-px", type=mm_per_px, default=None,
                   help="the size of one pixel in mm, for lesion areas in mm2 (some 0.004 for a 4288-px IDRiD photo)")
    p.add_argument("--keep-going", action="store_true", help="continue past bad files; exit 1 at the end if any failed")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--lesions", default=None, metavar="TYPES",
                   help="lesion types to write, e.g. HE,MA,EX,SE,OD (default: every output of the model)")
    _add_prob_bits(p, "depth of the <stem>_prob.png files")
    p.add_argument("--no-disc", action="store_true",
                   help="a model without an optic-disc output (the default): do not place the disc with the bundled "
                        "multi model (about 0.07 s a photo); lesions.csv's od_distance_dd and zone stay empty")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("evaluate", help="score a model on images with ground-truth masks")
    p.add_argument("--images", type=Path, default=None,
                   help="images folder (with --masks; its subfolders' photos when it holds none itself: a "
                        "clinic's patient folders), or an IDRiD-layout folder (images/ beside masks_HE/, masks_MA/ ...)")
    p.add_argument("--masks", type=Path, default=None, help="ground-truth masks folder (or its subfolders, when it holds none itself), "
                                                                 "matched to images by name stem (<stem>.png or <stem>_HE.png ...)")
    p.add_argument("--project", type=Path, default=None,
                   help="instead of --images/--masks: a plugin project's latest saved corrections (the model "
                        "defaults to the project's active one; corrections began as a model's own masks, so "
                        "they favour the model that made them)")
    _add_model_args(p)
    p.add_argument("--threshold", type=probability, default=None,
                   help="override the model's threshold (a probability between 0 and 1)")
    p.add_argument("--out", type=Path, default=None,
                   help="metrics JSON, or a folder for metrics.json (a PR-curve PNG and per-image CSV go beside it)")
    p.add_argument("--keep-going", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--lesions", default=None, metavar="TYPES",
                   help="also score these outputs, e.g. MA,EX,SE,OD, against <stem>_<T> masks beside the hemorrhage "
                        "masks or IDRiD's masks_<T>/ folders (default: every other output of the model that the "
                        "masks or the project's corrections speak for)")
    _add_prob_bits(p, "score the probabilities as predict's PNGs of this depth hold them")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("models", help="a project's model versions: list them, make one active, discard one",
                       description="A plugin project's model versions (what the Fine-tune dock lists): with no "
                                   "option, list them with their before/after scores; the active one (marked *) is "
                                   "what the plugin and predict/finetune --project use.")
    p.add_argument("--project", type=Path, required=True, help="the plugin project folder")
    act = p.add_mutually_exclusive_group()
    act.add_argument("--promote", metavar="VERSION", help="make VERSION the project's active model (the dock's Promote)")
    act.add_argument("--use-default", action="store_true", help="make the shipped default model active again")
    act.add_argument("--discard", metavar="VERSION",
                     help="move VERSION to models/.discarded/ (the dock's Discard; never the active one)")
    p.set_defaults(func=cmd_models)

    from lesionseg_training.cli import add_finetune_parser, add_train_parser

    add_train_parser(sub)
    add_finetune_parser(sub)
    return parser


def _load_model(path: Path | None, device: str, extra_grids: str | None = None):
    """The model folder (or bundled name) on the device, with ``--extra-grids`` if given."""
    from .core.bundled import resolve_model
    from .core.model_config import parse_grids
    from .core.model_folder import load_model_folder
    from .core.runtime import pick_device

    dev = pick_device(device)
    model = load_model_folder(resolve_model(path), dev)
    if extra_grids is None:
        return model, dev
    grids, own = parse_grids(extra_grids), model.config.preprocess.fov_diameter
    far = [g for g in grids if not 0.75 * own <= g <= 1.5 * own]
    if far:  # 100 px against the model's 832 averaged a useless map in: 1 lesion found where there were 25
        print(f"note: --extra-grids {','.join(map(str, far))}: far from the grid the model learned at ({own} px "
              f"across the fundus); its lesions look another size there and the averaged map may be worse "
              "(measured with the bundled models, at 832: 704 and 1024 px; README 'Command line')", file=sys.stderr)
    return model.with_extra_grids(grids), dev


def _bar(total: int, quiet: bool, unit: str):
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, disable=quiet, file=sys.stderr, dynamic_ncols=True)


def _drive(gen, bar) -> object:
    """Run a batch generator to its end, feeding the bar; returns the generator's value."""
    from .core.progress import run_to_end

    def show(ev: dict) -> None:
        kind = ev["event"]
        if kind == "tile":
            bar.set_postfix_str(f"{ev['image']} tile {ev['done']}/{ev['total']}", refresh=True)
        elif kind == "note":
            bar.write(f"note: {ev['image']}: {ev['message']}", file=sys.stderr)
        elif kind in ("image", "failed"):
            bar.update(1)
            if kind == "failed" and not ev.get("stops"):  # a stopping error is printed once, by run_command
                bar.write(f"error: {ev['message']}", file=sys.stderr)

    return run_to_end(gen, show)


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def probability(text: str) -> float:
    """``--threshold``: a probability strictly between 0 and 1 (5 scored every photo Dice 0;
    50 was likely meant as 0.5)."""
    value = _number(text)
    if not 0 < value < 1:
        hint = f"; {value:g} % is {value / 100:g}" if 1 < value < 100 else ""
        raise argparse.ArgumentTypeError(f"{text}: must be a probability between 0 and 1{hint}")
    return value


def mm_per_px(text: str) -> float:
    """``--mm-per-px``: one pixel's size in mm, in (0, 1] as the Segment dock's field allows (a
    negative one gave positive areas, 0 areas of 0; more than 1 mm a pixel is no fundus photo,
    likely pixels per mm given instead)."""
    value = _number(text)
    if not (math.isfinite(value) and 0 < value <= 1):
        hint = f"; {value:g} looks like pixels per mm: give {1 / value:.5f}" if value > 1 and math.isfinite(value) else ""
        raise argparse.ArgumentTypeError(f"{text}: must be one pixel's size in mm, more than 0 and at most 1 "
                                         f"(some 0.004 for a 4288-px IDRiD photo){hint}")
    return value


def cmd_gui(args: argparse.Namespace) -> int:
    """The plugin's main job: napari with the photos (or the sample) and the Segment dock."""
    from .core.errors import LesionsegInputError

    try:
        import napari
    except ImportError:
        raise LesionsegInputError(None, "the plugin needs napari and a Qt binding: pip install -e '.[pyqt6]'") from None
    from ._qt.launch import open_segment_window, photo_files

    photos = photo_files(args.photos) if args.photos else []  # refused before a window opens
    viewer = napari.Viewer(title="napari-lesionseg")
    open_segment_window(viewer, photos, args.project)
    napari.run()
    return EXIT_OK


def cmd_predict(args: argparse.Namespace) -> int:
    from .core.batch import collect_named, predict_files
    from .core.errors import LesionsegInputError

    if args.out is None and args.project is None:
        raise LesionsegInputError(None, "predict: give --out (a folder for the output files), --project (a plugin "
                                        "project folder) or both")
    paths, names = collect_named(args.inputs, recursive=args.recursive, exclude=[args.out, args.project])
    project = _project(args.project)
    model, dev = _load_model(project_model(args.model, project.root if project is not None else None), args.device, args.extra_grids)
    types = _lesion_types(args.lesions, model)
    with _bar(len(paths), args.quiet, "img") as bar:
        res = _drive(predict_files(model, paths, args.out, keep_going=args.keep_going, mm_per_px=args.mm_per_px,
                                   device=str(dev), tta=args.tta, precision=args.precision, types=types,
                                   prob_bits=args.prob_bits, project=project, names=names,
                                   locate_disc=not args.no_disc), bar)
    where = " and ".join([*([str(args.out)] if args.out is not None else []),
                          *([f"project {project.root}"] if project is not None else [])])
    print(f"{len(res.done)} of {len(paths)} images segmented with model '{model.version}'{_grids_note(model)} "
          f"-> {where}")
    if args.out is not None and res.done and "OD" not in model.config.network.outputs:
        print(f"lesions.csv: od_distance_dd and zone are empty: model '{model.version}' has no optic-disc output "
              "and --no-disc left its disc unplaced" if args.no_disc else
              f"lesions.csv: model '{model.version}' has no optic-disc output; od_distance_dd and zone are measured "
              "from the disc the bundled 'multi' model's disc output finds (--model multi also segments the disc "
              "and three more lesion types)")
    if project is not None and res.done:
        print(f"review them, most uncertain first: lesionseg gui --project {project.root} (or in napari: Review "
              "lesions, this project, 'Open next image')")
    return _report_failures(res.failures)


def _project(folder: Path | None):
    """The project folder for ``--project`` (created if needed; a file or an unwritable place is
    refused before any work)."""
    if folder is None:
        return None
    from .core.store import Project

    return Project(folder.expanduser())


def _grids_note(model) -> str:
    grids = model.config.inference.extra_grids
    return f" (also on grids of {', '.join(map(str, grids))} px, averaged)" if grids else ""


def _lesion_types(text: str | None, model) -> list[str] | None:
    """``--lesions`` checked against the model's outputs (None: all of them)."""
    from .core.errors import LesionsegInputError
    from .core.lesion_types import parse_types

    if text is None:
        return None
    try:
        return parse_types(text, available=model.config.network.outputs)
    except ValueError as err:
        raise LesionsegInputError(model.path, f"--lesions {text}: {err}") from None


def _report_failures(failures) -> int:
    if not failures:
        return EXIT_OK
    print(f"{len(failures)} file(s) failed:", file=sys.stderr)
    for f in failures:
        print(f"  {f.message}", file=sys.stderr)
    return EXIT_FAILURES


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .core.batch import evaluate_pairs
    from .core.lesion_types import HE, OUTPUT_TYPES
    from .core.report import report_path, write_report

    pairs = _evaluation_pairs(args)
    root = args.project.expanduser() if args.project is not None else None
    model, dev = _load_model(project_model(args.model, root), args.device, args.extra_grids)
    spoken = [t for t in OUTPUT_TYPES if any(p.knows(t) for p in pairs)]  # the types the truth speaks for
    types = _lesion_types(args.lesions, model)
    if types is None:  # the model's other outputs that the truth speaks for (a corrected MA was left unscored)
        types = [t for t in spoken if t != HE and t in model.config.network.outputs] or None
    _require_scorable(pairs, model, types, spoken, root / "labels" if root is not None else args.masks)
    out = report_path(args.out) if args.out is not None else None
    with _bar(len(pairs), args.quiet, "img") as bar:
        ds, res = _drive(evaluate_pairs(model, pairs, keep_going=args.keep_going, device=str(dev), tta=args.tta,
                                        threshold=args.threshold, precision=args.precision,
                                        types=types, prob_bits=args.prob_bits), bar)
    s = res.summary
    if not s["images"]:  # the photos were reviewed for other types only (scored below)
        print(f"model '{model.version}': hemorrhages not scored: none of the {len(pairs)} photo(s) was reviewed "
              "for them")
    else:
        _print_hemorrhage_scores(s, model, ds, args.prob_bits)
    if s["types"]:
        print(f"  {'type':6s} {'images':>6s} {'aupr':>8s} {'dice_ds':>8s} {'dice_img':>8s}")
        absent = []
        for t, ts in s["types"].items():
            note = _no_truth(t, res.scores[t])  # Dice 1.0 and AUPR nan would say nothing true
            absent += [note] if note else []
            print(f"  {t:6s} {int(ts['images']):6d} "
                  + " ".join(_cell(float("nan") if note else ts[k], 8, 4) for k in ("aupr", "dice_ds", "dice_img")))
        for note in absent:
            print(f"  {note}")
    unscored = [t for t in types or [] if t != HE and t not in spoken]
    if unscored:  # asked for, and no photo has a truth of that type (they were left out without a word)
        print(f"  not scored: {', '.join(unscored)}: no photo has a mask of that type ("
              + ("none was reviewed for it" if args.project is not None else
                 "<stem>_<T> files beside the hemorrhage masks, or IDRiD's masks_<T>/ folders") + ")")
    if out is not None:
        files = write_report(out, ds, {"model": model.version, "model_path": str(model.path),
                                            **({"project": str(args.project)} if args.project is not None else
                                               {"images": str(args.images), "masks": str(args.masks)}),
                                            **{k: s[k] for k in ("tta", "grids", "precision", "prob_bits") if k in s},
                                            **{k: v for k, v in s.items() if k.startswith(("fuzzy_", "entropy_"))},
                                            **{k: s[k] for k in ("lesion_precision", "lesion_recall", "gt_lesions",
                                                                 "pred_lesions")},
                                            "types": s["types"]})
        print("wrote " + ", ".join(str(f) for f in files))
    return _report_failures(res.failures)


def _require_scorable(pairs: list, model, types: list[str] | None, spoken: list[str], where: Path | None) -> None:
    """Refuse, before any photo is segmented, photos none of which was reviewed for a type
    this evaluation scores, saying how to score the types they were (``spoken``) reviewed for."""
    from .core.lesion_types import HE
    from .core.pairs import require_known_types

    scored = [HE, *[t for t in types or [] if t != HE]]
    has = [t for t in spoken if t in model.config.network.outputs]
    hint = (f"score them with --lesions {','.join(has)}" if has else
            f"model '{model.version}' has no {', '.join(spoken)} output: a model that has (the bundled multi: "
            f"--model multi) with --lesions {','.join(spoken)}" if spoken else "")
    require_known_types(pairs, scored, where, "nothing to score", hint)


def _no_truth(name: str, d, lesions: int | None = None) -> str | None:
    """For scores over photos none of which has a lesion of the type (healthy photos, a type
    absent from a study): what can be said (false alarms), since AUPR, Dice and recall need a
    lesion to mean anything; None when some photo has one."""
    c = d.total
    if c.tp + c.fn:
        return None
    flagged = sum(1 for r in d.per_image if float(r["pred_pixels"]) > 0)
    return (f"{name}: none in the masks of these {len(d.per_image)} photo(s) (AUPR, Dice and recall need one); "
            f"false alarms: " + (f"{lesions} lesion(s), " if lesions is not None else "")
            + f"{c.fp} px, on {flagged} of the photos")


def _print_hemorrhage_scores(s: dict, model, ds, prob_bits: int) -> None:
    print(f"model '{model.version}'{_grids_note(model)} on {int(s['images'])} images (threshold {ds.threshold:.3f}, "
          f"probabilities scored as {prob_bits}-bit PNGs):")
    absent = _no_truth("hemorrhages", ds, int(s["pred_lesions"]))
    if absent:
        print(f"  {absent}")
    for k in ("aupr", "dice_ds", "dice_img", "iou_ds", "iou_img", "precision_ds", "recall_ds", "accuracy_ds", "hd95",
              "fuzzy_error_capture", "fuzzy_area_fraction"):
        if absent and k not in ("accuracy_ds", "fuzzy_error_capture", "fuzzy_area_fraction"):
            continue
        value = f"{s[k]:.4f}" if math.isfinite(s[k]) else "-"  # e.g. the fuzzy map's share of no mistakes
        print(f"  {k:20s} {value}" + ("   (in pixels, the mean over the images)" if k == "hd95" else ""))
    if not absent:
        print(f"  {'lesion_precision':20s} {s['lesion_precision']:.4f}   (of {int(s['pred_lesions'])} predicted lesions, "
              "the share touching an annotated one)")
        print(f"  {'lesion_recall':20s} {s['lesion_recall']:.4f}   (of {int(s['gt_lesions'])} annotated lesions, the "
              "share the mask touches)")
    print(f"  does the fuzzy map lead to the mask's mistakes? ({model.config.inference.fuzzy.map} map; entropy of "
          "the same probability beside it)")
    print(f"  {'':42s} {'fuzzy':>8s} {'entropy':>8s}")
    rows = [(f"wrong pixels in the top {pct} % of the disc", f"top{pct}pct_error_capture") for pct in (1, 5, 10)]
    rows += [(f"{what} ({int(s[f'fuzzy_queue_{count}'])}) in the first 20 regions", f"queue_{share}")
             for what, count, share in (("missed lesions", "missed_lesions", "missed_reached"),
                                        ("false alarms", "false_alarms", "false_alarms_shown"))]
    for label, key in rows:  # a share of nothing (no wrong pixel, no missed lesion) is nan: shown as '-'
        print(f"  {label:42s} " + " ".join(_cell(s[f"{m}_{key}"], 8, 3) for m in ("fuzzy", "entropy")))


def _cell(value: float, width: int, digits: int) -> str:
    """``value`` in a table column, or '-' when there is nothing it could be a share of (nan)."""
    return f"{value:{width}.{digits}f}" if math.isfinite(value) else f"{'-':>{width}s}"


def cmd_models(args: argparse.Namespace) -> int:
    """List, promote or discard a project's model versions (the Fine-tune dock's headless twin)."""
    from .core.registry import Registry

    reg = Registry(existing_project(args.project))
    if args.promote:
        reg.promote(args.promote)
    elif args.use_default:
        reg.use_default()
    elif args.discard:
        print(f"discarded: {args.discard} -> {reg.discard(args.discard)}")
    active = reg.active()
    rows = [_version_row(reg.dir / v, reg.dir / v == active) for v in reg.versions()]
    print(f"{'  ' if active.parent == reg.dir else '* '}shipped default model")
    for row in rows:
        print(row)
    for name, missing in reg.incomplete().items():  # a folder copied in part was left out without a word
        print(f"  {name}: not a model version (no {' or '.join(missing)})")
    print(f"active: {active.name if active.parent == reg.dir else 'the shipped default model'}")
    if note := reg.missing_note():
        print(f"note: {note}")
    return EXIT_OK


def _version_row(path: Path, active: bool) -> str:
    """One version: its name, parent, and the fine-tune's old -> new scores and what they rest on."""
    from .core.errors import LesionsegInputError
    from .core.jsonfile import read_json

    def part(name: str) -> dict:
        try:
            return read_json(path / name)
        except (LesionsegInputError, OSError):
            return {}

    metrics, lineage = part("metrics.json"), part("lineage.json")
    parent = lineage.get("parent")
    text = f"{'* ' if active else '  '}{path.name}"
    if isinstance(parent, dict) and parent.get("version"):
        text += f"  (from {parent['version']})"
    old, new = metrics.get("old"), metrics.get("new")
    if isinstance(old, dict) and isinstance(new, dict):
        kind = f"{old['type']} " if isinstance(old.get("type"), str) else ""  # scored on another type than HE
        scores = [f"{kind}{label} {old[k]:.3f} -> {new[k]:.3f}" for k, label in (("dice_ds", "Dice"), ("aupr", "AUPR"))
                  if isinstance(old.get(k), (int, float)) and isinstance(new.get(k), (int, float))]
        text += f"  {', '.join(scores)}" + (f" ({metrics['validation']})" if metrics.get("validation") else "")
    if metrics.get("best_step") == 0:  # no fine-tuned checkpoint beat its parent (finetune_outcome.outcome)
        text += "  [its parent's weights: no fine-tuned checkpoint scored better]"
    return text


def project_model(model: Path | None, project_root: Path | None) -> Path | None:
    """``--model`` as given, else with a project its active model (what the plugin runs and
    fine-tunes there), else None (the shipped default)."""
    if model is not None or project_root is None:
        return model
    from .core.registry import Registry

    reg = Registry(project_root)
    if note := reg.missing_note():
        print(f"note: {note}", file=sys.stderr)
    return reg.active()


def existing_project(folder: Path) -> Path:
    """``folder`` (``~`` expanded) if it is a plugin project already, else a clear error: a
    mistyped ``--project`` of a command that reads a project made no empty project there."""
    from .core.errors import LesionsegInputError

    folder = folder.expanduser()
    if not (folder / "labels").is_dir():
        raise LesionsegInputError(folder, "is not a plugin project folder (no labels/ in it)")
    return folder


def _evaluation_pairs(args: argparse.Namespace) -> list:
    """evaluate's photos and truths: ``--images``/``--masks`` matched by stem, or a project's
    latest saved corrections."""
    from .core.batch import find_eval_pairs
    from .core.errors import LesionsegInputError

    if args.project is not None:
        if args.images is not None or args.masks is not None:
            raise LesionsegInputError(None, "evaluate: give --project or --images with --masks, not both")
        from .core.store import Project

        folder = existing_project(args.project)
        pairs = Project(folder).corrected_pairs()
        if not pairs:
            raise LesionsegInputError(folder, "holds no saved corrections to score against")
        return pairs
    if args.images is None:
        raise LesionsegInputError(None, "evaluate: give --images and --masks (or --project)")
    return find_eval_pairs(args.images, args.masks)


def error_line(err: BaseException) -> str:
    """One line for a user: the file and the problem."""
    from .core.errors import TrainingDiverged

    if isinstance(err, TrainingDiverged):
        return (f"training diverged ({err}) before any model was saved; lower the learning rate or check the "
                "data; no model was changed")
    if isinstance(err, MemoryError):
        return "not enough memory: use a smaller model, a smaller inference.tile_size, or fewer photos at once"
    if isinstance(err, OSError) and err.filename is not None:
        where = f"{err.filename} -> {err.filename2}" if err.filename2 else str(err.filename)
        return f"{where}: {err.strerror or err}"
    return str(err)


def _interrupt_on_sigterm() -> None:
    """SIGTERM (the plugin's Cancel or closed dock, a scheduler) ends the command as Ctrl-C does:
    ``finally`` blocks run, so temp folders go and finished rows are written."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        def raise_interrupt(signum: int, frame: object) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, raise_interrupt)


def run_command(func, args: argparse.Namespace) -> int:
    """Run a subcommand under the one error policy (module text)."""
    from .core.dataclass_io import ConfigError
    from .core.errors import LesionsegInputError, TrainingDiverged
    from .core.runtime import tune_allocator

    tune_allocator()  # a process-wide malloc setting: only in our own command-line processes
    _interrupt_on_sigterm()
    try:
        return int(func(args))
    except (LesionsegInputError, ConfigError, FileExistsError, OSError, MemoryError) as err:
        print(f"error: {error_line(err)}", file=sys.stderr)
        return EXIT_USAGE
    except TrainingDiverged as err:
        print(f"error: {error_line(err)}", file=sys.stderr)
        return EXIT_DIVERGED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(args.func, args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
