"""Out-of-fold figures of the cross-validation runs of ``compare_presets.py --full-res``: each
fold's last model (calibrated on training photos only) scored on its own fold's photos at full
resolution, then the five folds' pixels pooled into one precision-recall curve per output (the
IDRiD challenge's pooled AUPR, over all 53 annotated photos, each scored by the one model that
never trained on it), beside the spread of the per-fold figures.

A run's scores are kept beside it (``oof_scores.json``, written by ``compare_presets`` when it
scores the run); a run scored before that was kept is scored here again from its ``oof/`` model.
Each fold's scores are also kept in the repository (``--keep``, by default
``benchmarks/results/oof_states/<variant>-f<fold>-s<steps>.json``: the per-photo rows and the
256-bin precision-recall histograms, a few KB), and a fold whose run folder is gone is read from
there: runs that take hours finish in different sittings (and on machines whose ``/tmp`` does not
last), and their folds still pool into one curve. ``--keep A B`` reads each fold from the first
folder that has it and writes to ``A``: folds of one recipe scored on two machines, each kept in
its own folder (``oof_states_xeon/`` first, then ``oof_states/``), pool without copying files.

    python benchmarks/oof_report.py --runs /tmp/cv/runs --variants default,multi_he_crops --steps 1000 \\
        [--out benchmarks/results/oof.json]

A variant written ``name@steps`` is that recipe at another step budget than ``--steps`` (a longer
run of the same recipe against the kept shorter one: ``--variants default@1000,default@2000
--paired default@1000,default@2000``); ``name:tta`` (or ``name@steps:tta``) is the same fold
models scored with another test-time augmentation than their own (``none``, ``hflip``, ``flips``:
what a TTA costs in accuracy, ``--variants default_cameras,default_cameras:hflip``), or
``name:grids704+1024``: the same fold models also run on those working grids, averaged
(``inference.extra_grids``); their scores kept apart from the model's own.

Prints a table and writes JSON. Reads ``../shared/data`` (the fold's photos) only to score a run
that has no scores yet.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

from napari_lesionseg.core.jsonfile import json_text

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import compare_presets as cp  # noqa: E402

OTHER_TYPES = ["MA", "EX", "SE", "OD"]
TYPES = ["HE", *OTHER_TYPES]


def fold_pairs(variant: str, fold: int, images: str) -> tuple[list, list]:
    """The fold's training and report photos, split as ``compare_presets`` split them."""
    from lesionseg_training.data import find_pairs, split_pairs
    from lesionseg_training.train_config import load_config

    base, overrides = cp.photo_recipe(variant)
    cfg = load_config(base, [f'data.images="{images}"', f"data.val_every={cp.N_FOLDS}", f"data.val_offset={fold}",
                             *overrides])
    return split_pairs(find_pairs(cfg.data), cfg.data)


def score_fold(run_dir: Path, variant: str, fold: int, images: str, leave_out: frozenset[str] = frozenset(),
               tta: str | None = None) -> dict:
    """The run's ``oof/`` model scored at full resolution on its fold's photos (but
    ``leave_out``; with ``tta``: a TTA or a ``grids...`` view, else the model's own):
    ``BatchResult.score_state()``."""
    from napari_lesionseg.core.batch import evaluate_pairs
    from napari_lesionseg.core.model_folder import load_model_folder
    from napari_lesionseg.core.progress import run_to_end

    model = with_view(load_model_folder(run_dir / "oof"), tta)
    tta = tta if tta in TTAS else None
    val_pairs = [p for p in fold_pairs(variant, fold, images)[1] if p.id not in leave_out]
    others = [t for t in OTHER_TYPES if t in model.config.network.outputs]
    grids = model.config.inference.extra_grids
    print(f"scoring {run_dir.name} on {len(val_pairs)} photos{f' (TTA {tta})' if tta else ''}"
          f"{f' (extra grids {grids})' if grids else ''} ...", flush=True)
    _, res = run_to_end(evaluate_pairs(model, val_pairs, types=others, tta=tta))
    return res.score_state()


def scores_file(run_dir: Path, tta: str | None = None) -> Path:
    """Where a run's scores with its model's own TTA (``tta`` None), or with ``tta``, are kept."""
    return run_dir / (cp.OOF_SCORES if tta is None else f"oof_scores_tta-{tta}.json")


def run_scores(run_dir: Path, variant: str, fold: int, images: str, tta: str | None = None) -> dict | None:
    """The run's saved scores on its fold (with ``tta``, or its model's own); scored now if the
    run has an ``oof/`` model but no (or stale) scores; None when the run has not been scored at
    full resolution at all."""
    scores = scores_file(run_dir, tta)
    oof = run_dir / "oof"
    if not (oof / "weights.safetensors").is_file():
        return None
    if scores.is_file():
        state = json.loads(scores.read_text())
        if state.get("model_sha256") == cp.weights_sha256(oof):
            return state
    from napari_lesionseg.core.atomic import atomic_write_text

    state = {"model_sha256": cp.weights_sha256(oof), **score_fold(run_dir, variant, fold, images, tta=tta)}
    atomic_write_text(scores, json.dumps(state))
    return state


def kept_state_path(keep: Path, variant: str, fold: int, steps: int, noise: str | None = None,
                    tta: str | None = None) -> Path:
    return keep / f"{cp.run_name(variant, fold, noise, steps)}{f'-tta-{tta}' if tta else ''}.json"


def keep_state(keep: Path, variant: str, fold: int, steps: int, state: dict, noise: str | None = None,
               tta: str | None = None) -> None:
    """Write a fold's scores where later sittings find them (only when they changed). Scores
    kept for another model of the same run name (the recipe trained again, on another machine
    or seed) are not overwritten: the run must be kept elsewhere (``--keep``)."""
    from napari_lesionseg.core.atomic import atomic_write_text

    path = kept_state_path(keep, variant, fold, steps, noise, tta)
    if path.is_file():
        try:
            old = json.loads(path.read_text()).get("model_sha256")
        except ValueError:
            old = None
        if old is not None and old != state.get("model_sha256"):
            raise SystemExit(f"{path}: keeps the scores of another model named {path.stem} (weights sha256 "
                             f"{old[:12]}, these {str(state.get('model_sha256'))[:12]}); nothing was overwritten: "
                             "keep this run's scores in another folder (--keep DIR)")
    text = json.dumps({"variant": variant, "fold": fold, "steps": steps, **({"noise": noise} if noise else {}),
                       **({"tta": tta} if tta else {}), **state})
    if not path.is_file() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)


def kept_state(keep: Path, variant: str, fold: int, steps: int, noise: str | None = None,
               tta: str | None = None) -> dict | None:
    """A fold's scores kept by an earlier sitting, or None."""
    path = kept_state_path(keep, variant, fold, steps, noise, tta)
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text())
    except ValueError as e:
        raise SystemExit(f"{path}: not a readable scores file ({e})") from e
    if (state.get("variant"), state.get("fold"), state.get("steps"), state.get("noise"), state.get("tta")) \
            != (variant, fold, steps, noise, tta) or "scores" not in state:
        raise SystemExit(f"{path}: holds scores of {state.get('variant')} fold {state.get('fold')} at "
                         f"{state.get('steps')} steps (label noise {state.get('noise')}, TTA {state.get('tta')}), "
                         f"not of {variant} fold {fold} at {steps} (label noise {noise}, TTA {tta})")
    return state


def kept_state_in(keeps: list[Path], variant: str, fold: int, steps: int, noise: str | None = None,
                  tta: str | None = None) -> tuple[dict | None, Path | None]:
    """A fold's kept scores from the first of ``keeps`` that has them, and that folder."""
    for keep in keeps:
        state = kept_state(keep, variant, fold, steps, noise, tta)
        if state is not None:
            return state, keep
    return None, None


def scores_without(run_dir: Path, variant: str, fold: int, images: str, state: dict,
                   leave_out: frozenset[str], tta: str | None = None) -> dict:
    """``state`` again, its fold scored without the photos ``leave_out`` (a sensitivity check,
    not a recipe's score: which photos to leave out is a choice made after seeing them)."""
    if not {r["image"] for r in state["scores"]["HE"]["per_image"]} & leave_out:
        return state
    if not (run_dir / "oof" / "weights.safetensors").is_file():
        raise SystemExit(f"{variant} fold {fold}: --without rescores the fold, and its model ({run_dir / 'oof'}) "
                         f"is gone (the kept scores' pooled histogram cannot drop a photo)")
    return score_fold(run_dir, variant, fold, images, leave_out, tta)


def pooled_figures(states: list[dict]) -> dict:
    """Per output: pooled AUPR, dataset Dice, mean per-image Dice over every fold's photos, and
    the per-fold AUPRs; lesion-level recall and precision of hemorrhages."""
    from napari_lesionseg.core.metrics import DatasetScores, LesionCounts, pool_scores

    out: dict = {}
    types = dict.fromkeys(t for s in states for t in s["scores"])
    for t in types:
        parts = [DatasetScores.from_state(s["scores"][t]) for s in states if t in s["scores"]]
        summ = pool_scores(parts).summary()
        folds = [p.summary() for p in parts]
        out[t] = {"aupr": summ["aupr"], "dice_ds": summ["dice_ds"], "dice_img": summ["dice_img"],
                  "photos": int(summ["images"]), "fold_aupr": [f["aupr"] for f in folds],
                  "fold_dice_ds": [f["dice_ds"] for f in folds]}
    counts = [LesionCounts(**s["lesions"]) for s in states if s.get("lesions")]
    if counts:
        total = LesionCounts(*(sum(getattr(c, k) for c in counts) for k in ("gt", "gt_found", "pred", "pred_right")))
        out["HE"].update(total.summary())
    return out


def paired_difference(a_rows: list[dict], b_rows: list[dict], n_boot: int = 10_000, seed: int = 0) -> dict:
    """Recipe B minus recipe A on the photos both scored (each by its own fold model): dataset
    Dice (pooled counts) and mean per-image Dice, with 95 % intervals from resampling the photos
    (paired: a resampled photo brings both recipes' results). AUPR is left out: the per-photo
    precision-recall histograms are not kept."""
    import numpy as np

    a = {r["image"]: r for r in a_rows}
    b = {r["image"]: r for r in b_rows}
    ids = sorted(a.keys() & b.keys())
    if not ids:
        return {"photos": 0}

    def arrays(rows: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        gt = np.array([float(rows[i]["gt_pixels"]) for i in ids])
        pred = np.array([float(rows[i]["pred_pixels"]) for i in ids])
        tp = np.array([float(rows[i]["recall"]) for i in ids]) * gt
        return gt, pred, tp, np.array([float(rows[i]["dice"]) for i in ids])

    ga, pa, ta, da = arrays(a)
    gb, pb, tb, db = arrays(b)
    rng = np.random.default_rng(seed)
    draw = np.vstack([np.arange(len(ids)), rng.integers(0, len(ids), (n_boot, len(ids)))])
    ds_a = 2 * ta[draw].sum(1) / (ga[draw].sum(1) + pa[draw].sum(1))
    ds_b = 2 * tb[draw].sum(1) / (gb[draw].sum(1) + pb[draw].sum(1))
    img = db[draw].mean(1) - da[draw].mean(1)
    out = {"photos": len(ids), "n_boot": n_boot}
    for name, d in (("dice_ds", ds_b - ds_a), ("dice_img", img)):
        lo, hi = np.percentile(d[1:], [2.5, 97.5])
        out[name] = {"difference": float(d[0]), "ci95": [float(lo), float(hi)]}
    out["photos_b_better_dice"] = int((db > da).sum())
    return out


TTAS = ("none", "hflip", "flips")


def fold_difference(a: dict, b: dict, output: str) -> dict:
    """``b`` minus ``a`` fold by fold for one output's pooled figures (AUPR; the optic disc's
    dataset Dice), and the mean over folds."""
    key = "fold_dice_ds" if output == "OD" else "fold_aupr"
    per_fold = [y - x for x, y in zip(a[key], b[key])]
    return {"figure": "dataset Dice" if output == "OD" else "AUPR", "per_fold": per_fold,
            "mean": statistics.fmean(per_fold) if per_fold else float("nan")}


def grids_view(view: str | None) -> list[int] | None:
    """``grids704+1024`` -> [704, 1024] (the view that adds working grids); anything else None."""
    if not view or not view.startswith("grids"):
        return None
    parts = view[len("grids"):].split("+")
    if not all(p.isdigit() for p in parts):
        raise SystemExit(f"--variants: {view!r}: extra grids are written grids<px>+<px>, e.g. grids704+1024")
    return [int(p) for p in parts]


def with_view(model, view: str | None):
    """``model`` with the extra working grids a ``grids...`` view names (else as it is)."""
    grids = grids_view(view)
    return model if grids is None else model.with_extra_grids(grids)


def variant_steps(label: str, steps: int) -> tuple[str, int, str | None]:
    """``default@2000`` -> ("default", 2000, None); a plain name takes ``steps`` (``--steps``);
    ``default@2000:hflip`` -> ("default", 2000, "hflip"): scored with that TTA instead of the
    model's own."""
    head, _, tta = label.partition(":")
    name, _, budget = head.partition("@")
    if name not in cp.VARIANTS and name not in cp.ENSEMBLES:
        raise SystemExit(f"--variants: unknown recipe {name!r} (known: {', '.join([*cp.VARIANTS, *cp.ENSEMBLES])})")
    if budget and not budget.isdigit():
        raise SystemExit(f"--variants: {label!r}: the step budget after '@' must be a whole number")
    if tta and tta not in TTAS and grids_view(tta) is None:
        raise SystemExit(f"--variants: {label!r}: after ':' a TTA ({', '.join(TTAS)}) or extra working grids "
                         "(grids<px>+<px>, e.g. grids704+1024)")
    return name, int(budget) if budget else steps, tta or None


def spread(vals: list[float]) -> str:
    vals = [v for v in vals if v == v]
    if not vals:
        return "-"
    return f"{statistics.mean(vals):.3f} ± {statistics.stdev(vals):.3f}" if len(vals) > 1 else f"{vals[0]:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", required=True, help="compare_presets' --out folder")
    ap.add_argument("--variants", default="default,multi_he_crops")
    ap.add_argument("--folds", default=",".join(map(str, range(cp.N_FOLDS))))
    ap.add_argument("--steps", type=int, default=1000, help="the runs' step budget (their folder names say it)")
    ap.add_argument("--images", default=str(cp.DATA))
    ap.add_argument("--noise", default=None, metavar="SPEC",
                    help="the runs' --noise (e.g. missed=0.5,outline=8): runs trained on corrupted masks, scored on "
                         "the clean masks of their fold")
    ap.add_argument("--out", default=str(HERE / "results" / "oof.json"))
    ap.add_argument("--paired", default="", metavar="A,B",
                    help="also B minus A per photo (hemorrhage Dice, with bootstrap intervals over the photos)")
    ap.add_argument("--keep", type=Path, nargs="+", default=[HERE / "results" / "oof_states"],
                    help="folders of each fold's kept scores: written (to the first) for every run scored, read (from "
                         "the first that has it) for a fold whose run folder is gone; another model of a kept run's name "
                         "(the recipe trained again, e.g. on another machine) needs its own folder")
    ap.add_argument("--without", default="", metavar="IDS",
                    help="score every fold without these photos (comma-separated ids): how much they weigh")
    args = ap.parse_args()

    leave_out = frozenset(args.without.split(",")) if args.without else frozenset()
    report: dict = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.processor() or platform.machine()}",
                    # each variant's own budget is in its entry; this is --steps, for the ones without '@'
                    "steps": args.steps if any("@" not in lb for lb in args.variants.split(",")) else None,
                    "noise": args.noise or "none", "without": sorted(leave_out), "variants": {}}
    rows = []
    per_photo: dict[str, list[dict]] = {}
    for label in args.variants.split(","):
        variant, steps, tta = variant_steps(label, args.steps)
        states, folds, sources = [], [], []
        for fold in map(int, args.folds.split(",")):
            run_dir = Path(args.runs) / cp.run_name(variant, fold, args.noise, steps)
            state = run_scores(run_dir, variant, fold, args.images, tta) if run_dir.is_dir() else None
            if state is not None:
                keep_state(args.keep[0], variant, fold, steps, state, args.noise, tta)
                sources.append(str(run_dir))
            else:
                state, kept_in = kept_state_in(args.keep, variant, fold, steps, args.noise, tta)
                if state is not None:
                    print(f"{variant} fold {fold}: no run folder, its kept scores from {kept_in}")
                    sources.append(str(kept_in))
            if state is not None and leave_out:
                state = scores_without(run_dir, variant, fold, args.images, state, leave_out, tta)
            if state is not None:
                states.append(state)
                folds.append(fold)
        if not states:
            print(f"{label}: no fold scored at full resolution yet")
            continue
        figs = pooled_figures(states)
        # an ensemble's fold models are composed with one view per member (ensemble.py's --tta none)
        members = {"members": cp.ENSEMBLES[variant], "tta": tta or "none"} if variant in cp.ENSEMBLES else {}
        report["variants"][label] = {"folds": folds, "steps": steps, **({"tta": tta} if tta else {}), **members,
                                     "scores_from": sources, **figs}
        per_photo[label] = [r for st in states for r in st["scores"]["HE"]["per_image"]]
        he = figs["HE"]
        row = {"variant": label, "folds": ",".join(map(str, folds)), "photos": he["photos"],
               "HE AUPR (pooled)": f"{he['aupr']:.3f}", "HE AUPR per fold": spread(he["fold_aupr"]),
               "HE Dice ds / img": f"{he['dice_ds']:.3f} / {he['dice_img']:.3f}",
               "lesion recall / precision": f"{he.get('lesion_recall', float('nan')):.2f} / "
                                            f"{he.get('lesion_precision', float('nan')):.2f}"}
        for t in OTHER_TYPES:
            if t in figs:
                row[t] = f"{figs[t]['dice_ds']:.3f} Dice" if t == "OD" else f"{figs[t]['aupr']:.3f}"
        rows.append(row)
    cols = list(dict.fromkeys(k for r in rows for k in r))
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(str(r.get(c, "-")) for c in cols))
    if args.paired:
        va, vb = args.paired.split(",")
        pair = paired_difference(per_photo.get(va, []), per_photo.get(vb, []))
        fa, fb = (report["variants"].get(v, {}) for v in (va, vb))
        if fa and fb and fa["folds"] == fb["folds"]:  # AUPR pairs fold by fold (photos' histograms are not kept)
            # every output both have, fold by fold and its mean (the optic disc by Dice: one region to find)
            pair["fold_difference"] = {t: fold_difference(fa[t], fb[t], t) for t in fa if t in fb and t in TYPES}
            pair["fold_aupr_difference"] = pair["fold_difference"]["HE"]["per_fold"]  # as older reports hold it
        report["paired"] = {"a": va, "b": vb, **pair}
        if pair["photos"]:
            print(f"{vb} minus {va}, hemorrhages, {pair['photos']} photos (95 % interval over photos): "
                  + "; ".join(f"{k} {pair[k]['difference']:+.3f} [{pair[k]['ci95'][0]:+.3f}, {pair[k]['ci95'][1]:+.3f}]"
                              for k in ("dice_ds", "dice_img"))
                  + f"; {vb} better on {pair['photos_b_better_dice']} photos")
            if "fold_aupr_difference" in pair:
                print(f"{vb} minus {va}, hemorrhage AUPR fold by fold: "
                      + ", ".join(f"{d:+.3f}" for d in pair["fold_aupr_difference"]))
        for t, d in pair.get("fold_difference", {}).items():
            if t == "HE":  # printed above
                continue
            print(f"{vb} minus {va}, {t} {d['figure']} per fold: " + ", ".join(f"{x:+.3f}" for x in d["per_fold"])
                  + f"; mean {d['mean']:+.3f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json_text(report, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
