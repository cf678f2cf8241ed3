"""Benchmark: adapting a model (the shipped one unless told) to simulated cameras: without labels
(BatchNorm statistics re-estimated on the new camera's photos, ``training/adapt.py``) and with
them (``fine_tune`` on N corrected photos with the Fine-tune button's defaults: 2 minutes, as
``lesionseg finetune --images --masks --minutes 2`` runs it; "corrected" = their IDRiD masks, or
with ``--corrections queue`` what an annotator who walked the review queue's first
``--queue-regions`` regions leaves: :func:`queue_corrected`).

Photos: the annotated photos the base model (``--model``, default the shipped one) never
trained on (``LoadedModel.unseen_photos``: ``metrics.json``'s ``held_out``, or its
``val_images`` when those were not trained on; from ``../shared/data/idrid/train``), passed
through simulated cameras (size, colour cast, brightness, gamma, blur, vignetting, JPEG).
Adaptation uses the first N of the first 5 (N = 1, 3, 5, their images only); scores (full
resolution, through ``lesionseg evaluate``'s code) are on the rest, never used to adapt. A
model trained on every annotated photo names none: pass a cross-validation fold model
(``compare_presets.py --full-res`` writes it calibrated, naming its fold's photos, as ``<run>/oof``;
fine-tuning replays its photos once ``python -m lesionseg_training.replay`` has written them). Recovery = (adapted - shifted) / (unshifted -
shifted) in dataset Dice; "original" = the adapted model on the unshifted scored photos (what
adapting costs the old camera). Prints a table, writes results/adapt.json.

    python benchmarks/adapt.py [--cameras A,B,C] [--finetune-n 1,3,5] [--minutes 2]
                               [--replay-share S] [--calibration keep|all|held_out]
                               [--freeze-batchnorm] [--train-only all|decoder|early|norm] [--members I,J]
                               [--lr LR]
                               [--seeds 0,1,2] [--n 1,3,5 --keep 0.0] [--out adapt.json]
                               [--corrections full|queue|queue_unsure] [--queue-regions 20]

``--seeds``: each fine-tune once per seed (crops, augmentation); the table gives their mean and
range, the JSON each run (one run is noisy: the seed alone moves Dice by up to 0.06).

``--n``: BatchNorm re-estimation alone (no labels) on that many photos.

``--blend S``: the share of the base's weights in the new version (``Budget.blend``, WiSE-FT;
the button's 0.5 unless given; 0: the fine-tune's own weights). ``--blend 0 --blends
0.25,0.5,0.75``: each fine-tune's own weights also blended with the base's at these shares of
the base (``finetune.blend_states``) and scored, after the fact: one run gives the whole curve,
paired with the unblended fine-tune.

``--ceiling STEPS``: how far *any* fine-tune of this network could bring a camera back: the
base model fine-tuned for STEPS steps on its own training photos passed through the
camera (with their masks; the button's other settings, so a quarter of them held out to choose
the checkpoint), scored on the same photos. Recovery
is then also given against it: (tuned - shifted) / (ceiling - shifted). What a camera destroys
(blur, JPEG, a smaller sensor) no number of corrections brings back.

``--ablate``: which part of a camera costs the base model its Dice: the scored photos through
each part alone ("only ...") and through the camera without each part ("without ..."); blur
and JPEG keep the camera's size (their strength is in its pixels). No training.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from lesionseg_training.cameras import IDENTITY, Camera, shoot
from napari_lesionseg.core.jsonfile import json_text

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "idrid" / "train"

# the simulated cameras (lesionseg_training.cameras.Camera: scale, RGB gains, brightness, gamma,
# blur sigma (output px), vignetting, JPEG quality)
CAMERAS = {
    "A": Camera(0.6, (0.9, 1.0, 1.1), 1.0, 1.0, 0.0, 0.2, 50),  # smaller, cool cast, JPEG
    "B": Camera(0.45, (1.15, 0.9, 0.75), 0.75, 1.3, 1.5, 0.4, 30),  # smaller still, warm, dark, blurred
    "C": Camera(0.8, (1.0, 1.05, 1.0), 1.25, 0.85, 2.5, 0.0, 70),  # bright, soft focus
}


PARTS = {"size": ("scale",), "colour": ("gains", "bright"), "gamma": ("gamma",), "blur": ("blur",),
         "vignetting": ("vignette",), "JPEG": ("quality",)}


def ablations(camera: Camera) -> dict[str, Camera]:
    """``camera``'s parts (``PARTS``) one at a time and the camera without each, by name; parts
    the camera does not change are left out. Blur and JPEG alone keep the camera's size."""
    out: dict[str, Camera] = {}
    for part, fields in PARTS.items():
        if all(getattr(camera, f) == getattr(IDENTITY, f) for f in fields):
            continue
        keep = {f: getattr(camera, f) for f in fields}
        if part in ("blur", "JPEG"):
            keep["scale"] = camera.scale
        out[f"only {part}"] = IDENTITY._replace(**keep)
        out[f"without {part}"] = camera._replace(**{f: getattr(IDENTITY, f) for f in fields})
    return out


def _write_set(root: Path, ids: list[str], camera: tuple | None) -> tuple[Path, Path]:
    from PIL import Image

    from napari_lesionseg.core.image_io import read_image, read_mask

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for iid in ids:
        rgb, _ = read_image(DATA / "images" / f"{iid}.jpg")
        mask = read_mask(DATA / "masks_HE" / f"{iid}_HE.tif", shape=rgb.shape[:2])
        if camera is not None:
            rgb = shoot(rgb, camera)
            mask = np.asarray(Image.fromarray(mask).resize((rgb.shape[1], rgb.shape[0]), Image.NEAREST))
        Image.fromarray(rgb).save(root / "images" / f"{iid}.png")
        Image.fromarray(np.where(mask == 1, 255, 0).astype(np.uint8)).save(root / "masks" / f"{iid}.png")
    return root / "images", root / "masks"


def queue_corrected(pred, truth: np.ndarray, regions: int, unsure_rest: bool = False) -> np.ndarray:
    """A label map (0 / 1 lesion / 255 unsure) as an annotator who walks the first ``regions``
    regions of the *Review lesions* queue leaves it: the model's mask, set to the truth round
    each region shown (its box and a margin of half its size, at least 16 px: what the dock's
    view shows of it), the rest as the model drew it. ``unsure_rest``: the model's lesions that no
    region shown touched are 'unsure' (255) instead: not vouched for by anyone."""
    from napari_lesionseg.core.lesions import label_runs
    from napari_lesionseg.core.review import HIDE_BELOW, review_regions

    queue = review_regions(pred.mask, pred.probability, pred.fuzzy, threshold=pred.threshold,
                           review=pred.review).cut(HIDE_BELOW)
    lab = (np.asarray(pred.mask) == 1).astype(np.uint8)
    seen = np.zeros(lab.shape, bool)
    for r in queue.regions[:regions]:
        y0, x0, y1, x1 = r.bbox
        m = max(16, (y1 - y0) // 2, (x1 - x0) // 2)
        box = slice(max(0, y0 - m), y1 + m), slice(max(0, x0 - m), x1 + m)
        lab[box] = truth[box]
        seen[box] = True
    if unsure_rest:
        comp, n = label_runs(np.asarray(pred.mask) == 1)[:2]
        shown = np.bincount(comp[seen], minlength=n + 1) > 0
        lab[(comp > 0) & ~shown[comp] & ~seen] = 255
    return lab


def _queue_pairs(model_dir: Path, pool: tuple[Path, Path], ids: list[str], out: Path, regions: int,
                 unsure_rest: bool) -> tuple[list, dict[str, float]]:
    """The pool's photos ``ids`` as pairs whose masks are :func:`queue_corrected` label maps of the
    base model's own predictions (written under ``out``), and how much of the truth they hold."""
    from PIL import Image

    from napari_lesionseg.core.image_io import read_image, read_mask
    from napari_lesionseg.core.inference import predict
    from napari_lesionseg.core.model_folder import load_model_folder
    from napari_lesionseg.core.pairs import Pair
    from napari_lesionseg.core.progress import run_to_end

    model = load_model_folder(model_dir)
    out.mkdir(parents=True, exist_ok=True)
    pairs, agree = [], {"lesion_px_truth": 0, "lesion_px_kept": 0, "false_px_kept": 0, "unsure_px": 0}
    for iid in ids:
        rgb, _ = read_image(pool[0] / f"{iid}.png")
        truth = (read_mask(pool[1] / f"{iid}.png", shape=rgb.shape[:2]) == 1).astype(np.uint8)
        lab = queue_corrected(run_to_end(predict(model, rgb)), truth, regions, unsure_rest)
        Image.fromarray(lab).save(out / f"{iid}.png")
        pairs.append(Pair(iid, pool[0] / f"{iid}.png", out / f"{iid}.png", label_map=True))
        agree["lesion_px_truth"] += int(truth.sum())
        agree["lesion_px_kept"] += int(((lab == 1) & (truth == 1)).sum())
        agree["false_px_kept"] += int(((lab == 1) & (truth == 0)).sum())
        agree["unsure_px"] += int((lab == 255).sum())
    return pairs, agree


def _score(model, images: Path, masks: Path) -> dict[str, float]:
    from napari_lesionseg.core.batch import evaluate_pairs, find_eval_pairs
    from napari_lesionseg.core.progress import run_to_end

    _, res = run_to_end(evaluate_pairs(model, find_eval_pairs(images, masks)))
    return {"dice_ds": res.summary["dice_ds"], "aupr": res.summary["aupr"], "dice_img": res.summary["dice_img"]}


def _adapted(model_dir: Path, images: Path, ids: list[str], keep: float):
    from lesionseg_training.adapt import reestimate_batchnorm
    from lesionseg_training.data import Prepared
    from napari_lesionseg.core.image_io import read_image
    from napari_lesionseg.core.model_folder import load_model_folder
    from napari_lesionseg.core.preprocess import prepare

    model = load_model_folder(model_dir)
    pre = model.config.preprocess
    items = []
    for iid in ids:
        rgb, _ = read_image(images / f"{iid}.png")
        x, _, disc = prepare(rgb, pre.fov_diameter, pre.green_contrast_sigma)
        items.append(Prepared(iid, x, np.zeros(disc.shape, np.uint8), disc))
    t0 = time.perf_counter()
    reestimate_batchnorm(model.net, items, keep=keep)
    return model, time.perf_counter() - t0


def _tuned_scores(model_dir: Path, pairs: list, budget, out: Path, scored: tuple[Path, Path],
                  orig: tuple[Path, Path], blends: tuple[float, ...] = ()) -> dict:
    """The base model fine-tuned on ``pairs`` with ``budget`` into ``out``: its scores on the
    scored photos, the fine-tune's seconds, and its Dice on the original camera; with ``blends``,
    the Dice of the same run's weights blended with the base's at each share of the base (after
    the fact, the model's calibration kept: the curve ``Budget.blend`` picks one point of)."""
    from lesionseg_training.finetune import fine_tune
    from napari_lesionseg.core.model_folder import load_model_folder
    from napari_lesionseg.core.progress import run_to_end

    t0 = time.perf_counter()
    run_to_end(fine_tune(model_dir, pairs, budget, out))
    secs = time.perf_counter() - t0
    model = load_model_folder(out)
    got = {**_score(model, *scored), "seconds": secs, "original_dice_ds": _score(model, *orig)["dice_ds"],
           "steps": model.metrics.get("steps"), "best_step": model.metrics.get("best_step")}
    if blends:
        from lesionseg_training.finetune import blend_states

        base_state = load_model_folder(model_dir).net.state_dict()
        tuned_state = {k: v.clone() for k, v in model.net.state_dict().items()}
        got["blends"] = {}
        for share in blends:
            model.net.load_state_dict(blend_states(base_state, tuned_state, share))
            got["blends"][str(share)] = {"dice_ds": _score(model, *scored)["dice_ds"],
                                         "original_dice_ds": _score(model, *orig)["dice_ds"]}
    return got


def _recovery(dice: float, shifted: float, lost: float) -> float:
    """The share of what the camera cost (``lost``, Dice) that ``dice`` brings back from ``shifted``."""
    return (dice - shifted) / lost if abs(lost) > 1e-9 else float("nan")


def _finetuned(pool: tuple[Path, Path], ids: list[str], out: Path, minutes: float, scored: tuple[Path, Path],
               orig: tuple[Path, Path], lost: float, shifted: float, args: argparse.Namespace) -> dict:
    """Fine-tunes on ``ids`` once per seed: the mean of their scores, and each run under ``runs``."""
    from lesionseg_training.finetune import Budget
    from napari_lesionseg.core.pairs import match_pairs

    pairs = [p for p in match_pairs(*pool) if p.id in set(ids)]
    agree = None
    if args.corrections != "full":  # what a review through the queue leaves, not the whole truth
        pairs, agree = _queue_pairs(args.model, pool, ids, out.with_name(f"{out.name}_labels"), args.queue_regions,
                                    args.corrections == "queue_unsure")
    extra = {k: v for k, v in (("replay_share", args.replay_share), ("calibration", args.calibration),
                               ("lr", args.lr), ("freeze_batchnorm", args.freeze_batchnorm),
                               ("max_steps", args.max_steps), ("guard_margin", args.guard_margin),
                               ("blend", args.blend)) if v is not None}
    runs = []
    for seed in args.seeds:
        budget = Budget(minutes=minutes, steps=args.steps, train_only=args.train_only, members=args.members,
                        keep_base_if_better=not args.no_keep_base, seed=seed, **extra)
        got = _tuned_scores(args.model, pairs, budget, out.with_name(f"{out.name}_seed{seed}"), scored, orig,
                            args.blends)
        for scores in (got, *got.get("blends", {}).values()):
            scores["recovery"] = _recovery(scores["dice_ds"], shifted, lost)
        runs.append({"seed": seed, **got})
    mean = {k: float(np.mean([r[k] for r in runs])) for k in runs[0] if k not in ("seed", "steps", "best_step", "blends")}
    return {**mean, "runs": runs, **({"corrections": agree} if agree is not None else {})}


def _ceiling(model_dir: Path, cam: str, root: Path, ids: list[str], steps: int, scored: tuple[Path, Path],
             orig: tuple[Path, Path]) -> dict[str, float]:
    """The base model fine-tuned for ``steps`` steps on ``ids`` through camera ``cam``."""
    from lesionseg_training.finetune import Budget
    from napari_lesionseg.core.pairs import match_pairs

    pool = _write_set(root / cam / "ceiling_pool", ids, CAMERAS[cam])
    # the button's hold-out: a quarter of the photos choose the checkpoint (scoring old and new
    # on all 44 at full size would add some 10 minutes)
    got = _tuned_scores(model_dir, match_pairs(*pool), Budget(steps=steps), root / cam / "ceiling", scored, orig)
    return {**got, "steps": steps, "photos": len(ids)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cameras", default="A,B,C")
    ap.add_argument("--n", default="", help="BatchNorm re-estimation on these many photos (e.g. 1,3,5)")
    ap.add_argument("--keep", type=float, default=0.0, help="share of the old statistics kept")
    ap.add_argument("--finetune-n", default="1,3,5", help="fine-tune on these many corrected photos ('': skip)")
    ap.add_argument("--minutes", type=float, default=2.0, help="fine-tuning budget")
    ap.add_argument("--freeze-batchnorm", action=argparse.BooleanOptionalAction, default=None,
                    help="fine-tune with the BatchNorm statistics kept or not (default: the button's, kept)")
    ap.add_argument("--train-only", default="all", choices=["all", "decoder", "early", "norm"],
                    help="the parameters the fine-tune changes (default: the button's, all)")
    ap.add_argument("--members", default="", help="an ensemble base: fine-tune only these members, e.g. 1 "
                                                     "(default: the button's, every member)")
    ap.add_argument("--lr", type=float, default=None, help="fine-tuning learning rate (default: the button's)")
    ap.add_argument("--steps", type=int, default=None,
                    help="at most this many fine-tuning steps (within --minutes; default: the button's)")
    ap.add_argument("--max-steps", type=int, default=None,
                    help="with the time budget: stop after this many steps (0: fill the time; default: the button's)")
    ap.add_argument("--no-keep-base", action="store_true",
                    help="always take the fine-tune's best checkpoint, even when the base model scored better "
                         "on the held-out photo (the button keeps the base then)")
    ap.add_argument("--guard-margin", type=float, default=None,
                    help="fine-tune with the forgetting check at this AUPR margin (default: the button's, none)")
    ap.add_argument("--blend", type=float, default=None,
                    help="Budget.blend: the new weights this share the base's (default: the button's, 0.5; 0: none)")
    ap.add_argument("--blends", default="",
                    help="also score each fine-tune's weights blended with the base's at these shares of the base, "
                         "e.g. 0.25,0.5,0.75 (after the fact, same run)")
    ap.add_argument("--seeds", default="0", help="fine-tune once per seed, e.g. 0,1,2")
    ap.add_argument("--replay-share", type=float, default=None, help="share of replay crops (default: the button's)")
    ap.add_argument("--calibration", default=None, help="held_out / all / keep (default: the button's)")
    ap.add_argument("--ablate", action="store_true",
                    help="also score the base model through each part of each camera alone and the camera without it")
    ap.add_argument("--ceiling", type=int, default=0, metavar="STEPS",
                    help="also fine-tune on the base model's training photos through each camera for STEPS steps")
    ap.add_argument("--corrections", default="full", choices=["full", "queue", "queue_unsure"],
                    help="what the fine-tune's photos are corrected to: their whole IDRiD masks (full), or the "
                         "base model's masks set right round the first --queue-regions regions of the review "
                         "queue only, the rest as the model drew it (queue) or its untouched lesions unsure "
                         "(queue_unsure): an annotator who walked the queue (queue_corrected)")
    ap.add_argument("--queue-regions", type=int, default=20, help="regions of the queue walked per photo")
    ap.add_argument("--model", type=Path, default=None,
                    help="the base model folder (default: the shipped default); it must name 6 or more annotated "
                         "photos it never trained on, e.g. a cross-validation fold model when the shipped one "
                         "trained on every photo")
    ap.add_argument("--out", default="adapt.json", help="file name under results/")
    args = ap.parse_args()
    from napari_lesionseg.core.runtime import tune_allocator

    tune_allocator()  # as the button's `lesionseg_training finetune` process is set up (cli.run_command); not before 2026-12-08
    args.seeds = [int(v) for v in args.seeds.split(",") if v]
    args.blends = tuple(float(v) for v in args.blends.split(",") if v)
    args.members = tuple(int(v) for v in args.members.split(",") if v)
    from napari_lesionseg.core.bundled import default_model_dir
    from napari_lesionseg.core.model_folder import load_model_folder

    args.model = args.model or default_model_dir()
    base = load_model_folder(args.model)
    ids = base.unseen_photos
    if len(ids) < 6:
        raise SystemExit(f"{args.model}: names {len(ids)} photos it never trained on; 6 or more are needed "
                         "(pass a cross-validation fold model with --model)")
    adapt_pool, scored = ids[:5], ids[5:]
    ns = [int(n) for n in args.n.split(",") if n]
    train_ids = sorted(iid for iid in (p.stem.removesuffix("_HE") for p in (DATA / "masks_HE").glob("*_HE.tif"))
                       if iid not in ids)  # the base model's training photos, for --ceiling
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        orig = _write_set(root / "orig", scored, None)
        unshifted = _score(base, *orig)
        print(f"unshifted, {len(scored)} scored photos: Dice {unshifted['dice_ds']:.3f} AUPR {unshifted['aupr']:.3f}")
        for cam in args.cameras.split(","):
            shot_scored = _write_set(root / cam / "scored", scored, CAMERAS[cam])
            shot_pool = _write_set(root / cam / "pool", adapt_pool, CAMERAS[cam])
            shifted = _score(base, *shot_scored)
            row = {"shifted": shifted, "adapted": {}}
            if args.ablate:
                row["ablation"] = {}
                for name, part_cam in ablations(CAMERAS[cam]).items():
                    sc = row["ablation"][name] = _score(base, *_write_set(root / cam / name.replace(" ", "_"),
                                                                          scored, part_cam))
                    print(f"camera {cam}, {name}: Dice {sc['dice_ds']:.3f} AUPR {sc['aupr']:.3f}", flush=True)
            for n in ns:
                model, secs = _adapted(args.model, shot_pool[0], adapt_pool[:n], args.keep)
                got = _score(model, *shot_scored)
                lost = unshifted["dice_ds"] - shifted["dice_ds"]
                got["recovery"] = _recovery(got["dice_ds"], shifted["dice_ds"], lost)
                got["seconds"] = secs
                if n == max(ns):
                    got["original_dice_ds"] = _score(model, *orig)["dice_ds"]
                row["adapted"][n] = got
            row["finetune"] = {}
            for n in [int(n) for n in args.finetune_n.split(",") if n]:
                row["finetune"][n] = _finetuned(shot_pool, adapt_pool[:n], root / cam / f"ft{n}", args.minutes,
                                                shot_scored, orig, unshifted["dice_ds"] - shifted["dice_ds"],
                                                shifted["dice_ds"], args)
            rows[cam] = row
            print(f"camera {cam}: shifted Dice {shifted['dice_ds']:.3f} (AUPR {shifted['aupr']:.3f}); "
                  + "; ".join(f"N={n}: {g['dice_ds']:.3f} (recovery {g['recovery']:+.0%}, {g['seconds']:.1f} s)"
                              for n, g in row["adapted"].items())
                  + (f"; original domain after N={max(ns)}: {row['adapted'][max(ns)]['original_dice_ds']:.3f}"
                     if ns else ""), flush=True)
            for n, f in row["finetune"].items():
                seeds = ", ".join(f"{r['dice_ds']:.3f} (best step {r['best_step']} of {r['steps']})" for r in f["runs"])
                spread = f" (seeds: {seeds})"
                for share in args.blends:
                    bl = [r["blends"][str(share)] for r in f["runs"]]
                    print(f"camera {cam}: fine-tuned on {n}, blended {share:.0%} base: Dice "
                          + ", ".join(f"{b['dice_ds']:.3f}" for b in bl) + "; original domain "
                          + ", ".join(f"{b['original_dice_ds']:.3f}" for b in bl), flush=True)
                print(f"camera {cam}: fine-tuned on {n}: Dice {f['dice_ds']:.3f}{spread} (recovery "
                      f"{f['recovery']:+.0%}) in {f['seconds']:.0f} s; original domain {f['original_dice_ds']:.3f}",
                      flush=True)
            if args.ceiling:
                c = row["ceiling"] = _ceiling(args.model, cam, root, train_ids, args.ceiling, shot_scored, orig)
                room = c["dice_ds"] - shifted["dice_ds"]
                for f in row["finetune"].values():
                    f["recovery_of_ceiling"] = (f["dice_ds"] - shifted["dice_ds"]) / room if abs(room) > 1e-9 else float("nan")
                print(f"camera {cam}: ceiling ({c['photos']} photos, a quarter held out, {c['steps']} steps, {c['seconds']:.0f} s): Dice "
                      f"{c['dice_ds']:.3f}; original domain {c['original_dice_ds']:.3f}"
                      + ("; fine-tunes reach " + ", ".join(f"N={n}: {f['recovery_of_ceiling']:+.0%}"
                                                          for n, f in row["finetune"].items()) + " of the way to it"
                         if row["finetune"] else ""), flush=True)
    out = HERE / "results" / args.out
    out.write_text(json_text({"machine": platform.processor() or platform.machine(), "date": time.strftime("%Y-%m-%d"),
                               "model": str(args.model), "photos": {"adapt": adapt_pool, "scored": scored},
                               "keep": args.keep, "freeze_batchnorm": args.freeze_batchnorm,
                               "train_only": args.train_only, "members": list(args.members), "lr": args.lr,
                               "seeds": args.seeds,
                               "keep_base_if_better": not args.no_keep_base, "steps": args.steps, "max_steps": args.max_steps,
                               "corrections": args.corrections, "queue_regions": args.queue_regions,
                               "replay_share": args.replay_share, "guard_margin": args.guard_margin, "blend": args.blend, "blends": list(args.blends), "calibration": args.calibration, "unshifted": unshifted, "cameras": rows,
                               "camera_settings": CAMERAS}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
