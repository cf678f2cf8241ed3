"""Compare training methods on cross-validation folds of the IDRiD training photos, at an equal
wall-clock budget, with the score at an equal step count from the same runs; optionally with
noisy training masks (the validation masks stay clean).

Variants: the recipe shipped until 2026-12-02 (``default``: no simulated cameras), the shipped
one since (``default_cameras``), the former with DALE (``default_dale``; doubting annotated
lesion pixels too: ``default_dale_doubt``), in fp32
(``default_fp32``), with weight averaging (``default_ema``), self-trained on pseudo-labelled
unlabelled photos (``default_pseudo``: ``--pseudo-teacher``; at the shipped recipe
``default_pseudo_cameras``), with a mean teacher on them
(``default_meanteacher``: ``--unlabeled``), with larger crops
(``default_crop384``), with a fuzzy head trained with it and shown as the fuzzy map
(``default_errhead``), with four more outputs
(``multi_he_crops``, ``default_multi``; through simulated cameras: ``multi_cameras``); and, on
one small DynSegNet host (ResNet-18-layout encoder of width 16, ASPP, attention gates, residual
decoder), one component at a time: ``standard``, ``patchgan`` (spectral norm, no dynamic gates),
``patchgan_gates`` (the same with DynSegNet's dynamic gates), ``segan_critic``, ``dale``,
``sgdc``.

Folds: the 53 annotated photos sorted by id, photo i in fold ``i % 5``; each run trains on four
folds and reports on the fifth. No checkpoint is chosen: the score is the run's last
validation (the learning rate has decayed to its end by then), so the photos that report a
score chose nothing. Prints a table (mean and spread over folds) and writes
``results/compare_presets.json`` (every run's curve too).

Label noise (``--noise missed=0.5,outline=8``): in the training folds' masks, each lesion
smaller than the median lesion is dropped with probability ``missed`` (a grader who misses small
lesions), and each remaining lesion's outline is moved by ``outline`` full-resolution pixels,
outwards or inwards at random (loose or tight outlines); written once under ``--work``.

    python benchmarks/compare_presets.py --minutes 10 --variants default,default_dale --folds 0,1,2 \\
        --cache /tmp/cache [--noise missed=0.5,outline=8] [--threads 2]

Run it on an otherwise idle machine: the budget is wall clock. Runs made apart (e.g. two at a
time with ``--threads 1``, each into its own ``--results`` file) are tabled together, at equal
steps per fold too, by ``--report FILE [FILE ...] [--results MERGED]``.

An ``ENSEMBLES`` name (e.g. ``ensemble_multi_multicam``) trains nothing: its fold model is its
members' fold runs averaged (``lesionseg_training.ensemble``), scored with ``--full-res`` like a
trained run (and stored with ``--store-predictions``); ``oof_report.py`` pools it.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from napari_lesionseg.core.jsonfile import json_text

if TYPE_CHECKING:
    import torch

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "idrid" / "train"
N_FOLDS = 5

HOST = [
    'model.network.arch="dynsegnet_unet"', "model.network.in_channels=4", "model.network.attention_gates=true",
    "model.network.residual_decoder=true", "model.network.decoder_channels=[64,32,32,16]",
    'model.network.encoder={"type": "resnet18", "width": 16}', "model.network.aspp.channels=64",
    'model.network.dynamic={"mode": "off"}', 'adversary.type="none"', "data.batch_size=4",
]
UNLABELLED_WEIGHT = "loss.consistency_weight"  # a variant that sets it trains on --unlabeled too
WIDE = "model.network.widths=[24, 48, 96, 192, 384]"  # the U-Net 1.5x as wide at every level
PATCHGAN = ['adversary.type="patchgan"', "adversary.weight=0.5", 'adversary.patchgan={"ndf": 32}']
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "default": ("default", []),
    "default_dale": ("default_dale", []),
    # DALE that may doubt annotated lesion pixels too (loose outlines), in its border band, down to
    # the omega floor (0.5): never a confident flip (issue 11's untried move)
    "default_dale_doubt": ("default_dale", ["paradigm.dale.protect_positives=false"]),
    # the same network and recipe with four more outputs (MA, EX, SE, OD) from IDRiD's other masks
    "default_multi": ("default", ['model.network.outputs=["HE","MA","EX","SE","OD"]',
                                  'data.centre_types=["HE","MA","EX","SE"]']),
    # the same outputs, crops centred on hemorrhages only (as the HE-only recipe's): capacity vs crops
    "multi_he_crops": ("default", ['model.network.outputs=["HE","MA","EX","SE","OD"]']),
    # weight averaging (issue 13's levers): the saved model is the EMA of the weights, horizon ~200 steps
    "default_ema": ("default", ["optim.ema=0.995"]),
    # the same in fp32: the forward pass without bf16 autocast (issue 13: does bf16 cost accuracy?)
    "default_fp32": ("default", ["run.amp=false"]),
    # more context per crop (a diffuse hemorrhage spans more than a 256-px crop), about the same
    # pixels per step: half the crops, each 384 px
    "default_crop384": ("default", ["data.crop_size=384", "data.batch_size=4"]),
    # the other way: smaller crops, more of them (192 px, batch 14: about the same pixels per step);
    # 384-px crops in batches of 4 lost 0.034 AUPR at 2000 steps, so more, smaller views may gain
    "default_crop192": ("default", ["data.crop_size=192", "data.batch_size=14"]),
    # a finer working grid (issue 13's resolution lever): 1152 px across the disc instead of 832
    # (1.38x finer, 1.9x the pixels at inference), the green-contrast background scaled with it;
    # the same 256-px crops, so the same cost per step and less context per crop
    "default_fov1152": ("default", ["model.preprocess.fov_diameter=1152", "model.preprocess.green_contrast_sigma=33.2"]),
    # the other way: a coarse grid, 416 px across the disc (half the shipped 832; green-contrast
    # background scaled with it), so a 256-px crop shows four times the fundus; a candidate second
    # member beside the fine network for large diffuse hemorrhages (IDRiD_17's), at a quarter of
    # the pixels per photo
    "default_fov416": ("default", ["model.preprocess.fov_diameter=416", "model.preprocess.green_contrast_sigma=12.0"]),
    # self-training: a third of the crops from the unlabelled photos, pseudo-labelled by the fold's
    # own model of the same recipe (--pseudo-teacher), copies of annotated photos left out
    "default_pseudo": ("default", ["data.pseudo_share=0.3"]),
    # the same at the shipped recipe (simulated cameras on the annotated crops; the pseudo-labelled
    # ones stay clean), for the long budget with a 4000-step teacher: what the 1000-step probe of
    # default_pseudo left untried (training/README.md "Self-training on the unlabelled photos")
    "default_pseudo_cameras": ("default", ["data.cameras.share=0.5", "data.pseudo_share=0.3"]),
    # distillation (issue 13 item 4: one network where the default runs two): the same, the
    # pseudo-labelled crops' target the teacher's probability itself on every pixel of the disc
    # (data.pseudo_soft); --pseudo-teacher the pair's fold model (ensemble_cameras_multi's oof/),
    # in its own --work (a folder labelled since 2026-12-06 keeps the probabilities)
    "default_distil_cameras": ("default", ["data.cameras.share=0.5", "data.pseudo_share=0.3",
                                           "data.pseudo_soft=true"]),
    # the same photos another way: a mean teacher (the weights' moving average) predicts crops of the
    # unlabelled photos, and the network, seeing them turned and jittered again, is pulled towards it
    # (loss.consistency_weight; lesionseg_training.consistency); copies of annotated photos left out
    "default_meanteacher": ("default", [f"{UNLABELLED_WEIGHT}=1.0"]),
    # issue 12's fuzzy head trained with the network from the start, shown as the fuzzy map
    "default_errhead": ("default", ["model.network.error_head=true", 'model.inference.fuzzy.map="head"']),
    # issue 15 / 13: half the crops from each training photo seen through two simulated cameras
    # (lesionseg_training.cameras: size, colour, exposure, gamma, blur, vignetting, JPEG)
    "default_cameras": ("default", ["data.cameras.share=0.5"]),
    # issue 14's resolution lever for the small types: the five outputs on the 1152-px grid
    # (a microaneurysm's median diameter, 18 px in the photo, is 4.4 px on the 832-px grid)
    "multi_fov1152": ("default", ['model.network.outputs=["HE","MA","EX","SE","OD"]',
                                  "model.preprocess.fov_diameter=1152", "model.preprocess.green_contrast_sigma=33.2"]),
    # the five outputs trained as the shipped HE recipe is, half the crops through simulated
    # cameras: a camera-robust second member for the default and a second five-output network
    "multi_cameras": ("default", ['model.network.outputs=["HE","MA","EX","SE","OD"]', "data.cameras.share=0.5"]),
    # issue 15's ceiling: the shipped recipe with every crop through benchmarks/adapt.py's harsh camera
    # B (and nothing else): what a network that saw only that camera's photos reaches through it
    "default_camB": ("default", ["data.cameras.share=1.0", "data.cameras.versions=1",
                                 "data.cameras.fixed=[0.45, [1.15, 0.9, 0.75], 0.75, 1.3, 1.5, 0.4, 30]"]),
    # issue 13's loss lever: the batch soft-Dice term off, BCE (pos_weight 3) alone; BCE is a proper
    # scoring rule, so the probability's ranking (AUPR) may gain what the mask's overlap loses
    "default_bce": ("default", ["loss.dice_weight=0"]),
    # the other way: the batch soft-Dice term three times BCE's weight
    "default_dice3": ("default", ["loss.dice_weight=3"]),
    # BCE without the weight on lesion pixels (pos_weight 1 instead of 3), Dice as shipped
    "default_pw1": ("default", ["loss.pos_weight=1"]),
    # the other way: lesion pixels weighted 6 in BCE (pos_weight 1 lost 0.023 AUPR on fold 1, the
    # fold limited by missed hemorrhage pixels: "Where the false alarms lie")
    "default_pw6": ("default", ["loss.pos_weight=6"]),
    # issue 13's learning rate (never varied): Adam's peak rate twice the shipped 1e-3, the same cosine decay;
    # every doubling of the steps has helped, so a network that learns faster per step might gain
    "default_lr2e-3": ("default", ["optim.lr=2e-3"]),
    # and half the shipped rate
    "default_lr5e-4": ("default", ["optim.lr=5e-4"]),
    # issue 13's capacity lever (never varied): the U-Net 1.5x as wide at every level (2.25x the
    # arithmetic per step and per photo); the model trains about as well on its own photos as it
    # scores on unseen ones (0.89 % against 0.99 % wrong pixels), a sign of too little capacity
    "default_w24": ("default", [WIDE]),
    # context instead of width: a sixth level (512 channels at 1/32 of the working grid) doubles the
    # receptive field for about a quarter more arithmetic per photo; a large diffuse hemorrhage
    # (IDRiD_17 holds 28 % of the lesion pixels) spans more than the five-level network sees
    "default_d6": ("default", ["model.network.widths=[16, 32, 64, 128, 256, 512]"]),
    # issue 13's per-image quality: lesion-centred crops drawn lesion by lesion (each as likely, then a
    # pixel of it) instead of pixel by pixel, where one diffuse hemorrhage of thousands of pixels is
    # the centre of most crops of its photo and a small one of almost none
    "default_per_lesion": ("default", ['data.centre_on="lesion"']),
    # the other way round: fewer lesion-centred crops (0.4 instead of 0.625 of them), more of the
    # background where false alarms arise (photos with few hemorrhages drag per-image Dice)
    "default_lcf04": ("default", ["data.lesion_crop_fraction=0.4"]),
    # and the other way: 0.8 of the crops lesion-centred (0.4 was 0.010 and 0.005 lower by fold)
    "default_lcf08": ("default", ["data.lesion_crop_fraction=0.8"]),
    # the same in the shipped recipe (half the crops through simulated cameras), for the long budget
    "default_lcf08_cameras": ("default", ["data.cameras.share=0.5", "data.lesion_crop_fraction=0.8"]),
    # scale: every crop shows a square of the photo 0.8-1.25 times its side (log-uniform) resampled
    # to the crop's size, so each lesion is seen at sizes the fixed working grid never gives it
    # (the flips and right-angle turns are the only geometric augmentation otherwise)
    "default_zoom": ("default", ["data.augment.zoom=[0.8, 1.25]"]),
    # weight decay, never varied until then: AdamW's decoupled decay 0.05 (a common value for
    # segmentation networks; not tuned) instead of none, as a regulariser for 42 photos
    "default_wd": ("default", ['optim.type="adamw"', "optim.weight_decay=0.05"]),
    # the green-contrast channel subtracts a background blurred at 24 px of the 832-px grid, so a
    # diffuse hemorrhage hundreds of px across (IDRiD_17's) is flattened in it; at 64 px it stays
    "default_gc64": ("default", ["model.preprocess.green_contrast_sigma=64.0"]),
    # both: the 24-px green-contrast channel that finds small hemorrhages kept, and a second one over
    # a 96-px background beside it (5 input channels), for diffuse hemorrhages hundreds of px across
    # that the 24-px channel flattens (gc64 replaced the 24-px channel and lost small ones)
    "default_gc24_96": ("default", ["model.preprocess.green_contrast_sigma=[24.0, 96.0]",
                                    "model.network.in_channels=5"]),
    # online hard negatives: half of the background crops centred on a place where the network
    # itself raised a false alarm on that photo lately (p > 0.5 on background at least 8 px from any
    # lesion; the last 64 per photo), instead of anywhere in the disc (values picked before any run)
    "default_hardneg": ("default", ["data.hard_negatives.share=0.5"]),
    # issue 13's unlabelled photos a third way: the network first learns to in-paint blanked blocks of
    # the 452 unlabelled photos (lesionseg_training.pretrain, no labels), then trains as shipped from
    # those weights (--init: the pretraining's model folder)
    "default_inpaint": ("default", []),
    # the same start in the shipped recipe (half the crops through simulated cameras), for the long budget
    "default_inpaint_cameras": ("default", ["data.cameras.share=0.5"]),
    # the wider network in the shipped recipe (half the crops through simulated cameras), for the
    # long budget: does capacity lift the plateau that 8000 steps did not?
    "default_w24_cameras": ("default", ["data.cameras.share=0.5", WIDE]),
    # issue 14's soft exudates (0.52 out of fold against 0.55): the five outputs with lesion-centred
    # crops drawn, on a photo that has both, half on a hemorrhage and half on a soft exudate (26 of
    # the 54 photos have any) instead of on hemorrhages only, where SE is met in random crops alone
    "multi_se_crops": ("default", ['model.network.outputs=["HE","MA","EX","SE","OD"]',
                                   'data.centre_types=["HE","SE"]']),
    # the same crops for the camera-trained five-output network (the bundled pair's second member)
    "multi_se_crops_cameras": ("default", ['model.network.outputs=["HE","MA","EX","SE","OD"]',
                                           "data.cameras.share=0.5", 'data.centre_types=["HE","SE"]']),
    "multi_he_crops_ema": ("default", ['model.network.outputs=["HE","MA","EX","SE","OD"]', "optim.ema=0.995"]),
    "standard": ("default", HOST),
    "patchgan": ("default", HOST + PATCHGAN),
    "patchgan_gates": ("default", HOST + PATCHGAN + ['model.network.dynamic={"mode": "gates"}']),
    "segan_critic": ("default", HOST + ['adversary.type="segan_critic"', "adversary.weight=1.0",
                                        'adversary.segan_critic={"ndf": 32, "clamp": 0.05}']),
    "dale": ("default", HOST + ['paradigm.type="dale"', 'paradigm.dale={"partition_every": 300}']),
    "sgdc": ("default", HOST + ['model.network.sgdc={"enabled": true, "bottleneck": 64, "guide_ch": 16, "kernel": 5}']),
}


PRETRAINED = {"default_inpaint", "default_inpaint_cameras"}  # variants that start from --init's weights


# What configs/default.toml changed after these variants were measured, held as it was for every
# variant that does not name it, so a variant's name means one recipe and one scoring in every
# results file: since 2026-12-02 the config trains half its crops through simulated cameras (the
# ``default_cameras`` recipe, adopted after all five folds; every run named ``default`` in
# results/ is the recipe before), and its models run 2 TTA views (every fold model here is scored
# with 4 flips, as every kept fold score was; ``oof_report.py``'s ``name:tta`` scores one with
# another TTA).
AS_MEASURED = {"data.cameras": "data.cameras.share=0", "model.inference.tta": 'model.inference.tta="flips"'}
for _name, (_base, _over) in list(VARIANTS.items()):
    VARIANTS[_name] = (_base, [held for named, held in AS_MEASURED.items()
                               if not any(o.startswith(named) for o in _over)] + list(_over))


def noisy_copy(src: Path, work: Path, missed: float, outline: int, seed: int = 0) -> Path:
    """An IDRiD-layout folder whose hemorrhage masks are corrupted (images are symlinks). Every
    photo is corrupted; the benchmark gives the validation fold its clean masks back."""
    from PIL import Image
    from scipy import ndimage

    out = work / f"noisy_m{missed}_o{outline}_s{seed}"
    if (out / "done").exists():
        return out
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks_HE").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    disk = ndimage.generate_binary_structure(2, 1)
    for img in sorted((src / "images").glob("*.jpg")):
        link = out / "images" / img.name
        if not link.exists():
            link.symlink_to(img.resolve())
        mpath = src / "masks_HE" / f"{img.stem}_HE.tif"
        if not mpath.exists():
            continue
        m = np.asarray(Image.open(mpath)) > 0
        if m.ndim == 3:
            m = m.any(axis=2)
        lab, n = ndimage.label(m)
        areas = ndimage.sum_labels(m, lab, index=np.arange(1, n + 1)) if n else np.zeros(0)
        small = float(np.median(areas)) if n else 0.0
        new = np.zeros_like(m)
        for k, sl in enumerate(ndimage.find_objects(lab), start=1):
            if areas[k - 1] < small and rng.random() < missed:
                continue  # missed by the grader
            pad = outline + 2
            y0, x0 = max(sl[0].start - pad, 0), max(sl[1].start - pad, 0)
            y1, x1 = min(sl[0].stop + pad, m.shape[0]), min(sl[1].stop + pad, m.shape[1])
            comp = lab[y0:y1, x0:x1] == k
            if outline:
                if rng.random() < 0.5:
                    comp = ndimage.binary_dilation(comp, disk, iterations=outline)
                else:
                    eroded = ndimage.binary_erosion(comp, disk, iterations=outline)
                    comp = eroded if eroded.any() else comp
            new[y0:y1, x0:x1] |= comp
        Image.fromarray((new * 255).astype(np.uint8)).save(out / "masks_HE" / f"{img.stem}_HE.png")
    (out / "done").write_text("ok")
    return out


def run_one(variant: str, fold: int, args: argparse.Namespace, images: Path, clean: Path) -> dict:
    from lesionseg_training.data import find_pairs, split_pairs
    from lesionseg_training.train_config import load_config
    from lesionseg_training.trainer import train

    if variant in ENSEMBLES:
        return score_ensemble(variant, fold, args, clean)
    base, overrides = VARIANTS[variant]
    if any(o.startswith("data.pseudo_share") for o in overrides):
        overrides = [*overrides, f'data.pseudo_labels="{fold_pseudo_labels(fold, args, clean)}"']
    if any(o.startswith(UNLABELLED_WEIGHT) for o in overrides):  # copies of any annotated photo left out
        overrides = [*overrides, f'data.unlabelled="{args.unlabeled}"', f'data.unlabelled_not_like="{clean / "images"}"']
    budget = [f"run.steps={args.steps}"] if args.steps else [f"run.minutes={args.minutes}", "run.steps=100000"]
    cfg = load_config(base, [f'data.images="{images}"', *budget,
                             f"run.eval_every={args.eval_every}", f'model.name="cmp-{variant}"',
                             f"data.val_every={N_FOLDS}", f"data.val_offset={fold}", f"run.seed={args.seed}",
                             *([f"run.threads={args.threads}"] if args.threads else []),
                             *([f'data.cache_dir="{args.cache}"'] if args.cache else []),
                             *(["run.snapshots=true"] if args.snapshots else []), *overrides])
    train_pairs, val_pairs = split_pairs(find_pairs(cfg.data), cfg.data)
    if images != clean:  # the reporting fold keeps its clean masks
        clean_cfg = load_config(base, [f'data.images="{clean}"', f"data.val_every={N_FOLDS}", f"data.val_offset={fold}"])
        val_pairs = split_pairs(find_pairs(clean_cfg.data), clean_cfg.data)[1]
    run_dir = Path(args.out) / run_name(variant, fold, args.noise, args.steps)
    curve: list[dict] = []
    done: dict = {}
    t0 = time.time()
    for ev in train(cfg, run_dir, pairs=(train_pairs, val_pairs), resume=args.resume,
                    init_from=pretrained_init(variant, args, cfg)):
        if ev.get("event") == "eval":
            curve.append({"step": ev["step"], **{k: v for k, v in ev.items() if k.startswith(("val_aupr", "val_dice"))
                                                 and not k.startswith("val_dice_best")}})
        if ev.get("event") == "done":
            done = ev
    # the training's own clock (``elapsed``: carried across resumes in state.pt), not this
    # invocation's: a resumed run's minutes were those of its last part only (a finished
    # 4000-step run rerun with --resume read 3.8 minutes, 0.06 s a step)
    trained_s = float(done["elapsed"]) if "elapsed" in done else time.time() - t0
    t_trained = time.time()
    if args.resume:  # the whole curve, from before the interruption too (a finished run adds none)
        curve = [{"step": ev["step"], **{k: v for k, v in ev.items() if k.startswith(("val_aupr", "val_dice"))}}
                 for ev in map(json.loads, (run_dir / "events.jsonl").read_text().splitlines())
                 if ev.get("event") == "eval"]
    last = curve[-1] if curve else {"step": 0, "val_aupr": None, "val_dice": None}  # no validation: null in the results
    if args.full_res:
        scored = kept_full_resolution(run_dir) if args.resume else None
        last = {**last, **(scored or full_resolution_report(run_dir, train_pairs, val_pairs, args.cache,
                                                             ["MA", "EX", "SE", "OD"]))}
    if args.store_predictions:
        store_predictions(run_dir, val_pairs, args, variant, fold)
    return {"variant": variant, "fold": fold, "noise": args.noise or "none", "steps": done.get("step", last["step"]),
            **{k: v for k, v in last.items() if k != "step"}, "minutes": round((trained_s + time.time() - t_trained) / 60, 1),
            "val_ids": [p.id for p in val_pairs], "curve": curve}


def pretrained_init(variant: str, args: argparse.Namespace, cfg) -> torch.nn.Module | None:
    """The network a variant starts from (``--init``, checked against the variant's ``cfg`` as
    ``lesionseg train --init`` checks it; only ``PRETRAINED`` variants take one, and they need
    it), or None."""
    if variant not in PRETRAINED:
        return None
    if not args.init:
        raise SystemExit(f"{variant} starts from pretrained weights: give --init (lesionseg_training.pretrain's "
                         "<run>/pretrained)")
    from lesionseg_training.cli import warm_start

    return warm_start(args.init, cfg)[0]


def run_name(variant: str, fold: int, noise: str | None, steps: int | None) -> str:
    """A run's folder name under ``--out``: ``default-f0-s1000``, with label noise
    ``default-f0-missed0.5_outline8-s1000`` (``oof_report`` finds runs by it)."""
    tag = f"{variant}-f{fold}" + (f"-{noise}" if noise else "") + (f"-s{steps}" if steps else "")
    return tag.replace("=", "").replace(",", "_")


def fold_pseudo_labels(fold: int, args: argparse.Namespace, annotated: Path) -> Path:
    """The fold's pseudo-label folder under ``--work``, labelled (once; an interrupted labelling
    continues) by ``--pseudo-teacher`` with ``{fold}`` filled in: a model that never trained on
    this fold's photos. Unlabelled photos that are one of the annotated photographs are left out."""
    from lesionseg_training.pseudo_labels import MANIFEST, list_photos, pseudo_label, same_photographs
    from napari_lesionseg.core.model_folder import load_model_folder
    from napari_lesionseg.core.progress import run_to_end

    if not args.pseudo_teacher:
        raise SystemExit("a pseudo-label variant needs --pseudo-teacher (e.g. /tmp/cv/runs/default-f{fold}-s2000/oof)")
    teacher = load_model_folder(Path(args.pseudo_teacher.format(fold=fold)))
    if not set(p.id for p in _fold_pairs(annotated, fold)) <= set(teacher.unseen_photos):
        raise SystemExit(f"{teacher.path} may have trained on fold {fold}'s photos: it must name them as unseen")
    out = Path(args.work) / f"pseudo-f{fold}"
    if (out / "done").exists():
        made_by = json.loads((out / MANIFEST).read_text()).get("teacher_weights_sha256")
        if made_by != teacher.config.weights_sha256:  # labelling refuses it too; a finished folder is not relabelled
            raise SystemExit(f"{out} holds another teacher's pseudo-labels: give another --work")
        return out
    photos = list_photos(Path(args.unlabeled))
    same = same_photographs(photos, list_photos(annotated / "images"))
    run_to_end(pseudo_label(teacher, photos, out, left_out=same))
    (out / "done").write_text("ok")
    return out


# Models not trained but composed from other variants' fold models (``python -m
# lesionseg_training.ensemble``: the mean of their probabilities), scored like a variant's
# (``oof_report.py``); their photos are their members' (every variant splits the folds alike).
ENSEMBLES: dict[str, list[str]] = {
    # the shipped default since 2026-12-03: the default recipe's network and the five-output one's HE
    "ensemble_cameras_multi": ["default_cameras", "multi_he_crops"],
    # the same with the five-output recipe trained through simulated cameras too (``multi_cameras``)
    "ensemble_cameras_multicam": ["default_cameras", "multi_cameras"],
    # two five-output networks (clean and camera-trained), every output: a two-network ``multi``
    "ensemble_multi_multicam": ["multi_he_crops", "multi_cameras"],
    # the same pair with crops centred on hemorrhages or soft exudates (issue 14's soft exudates)
    "ensemble_multi_multicam_se": ["multi_se_crops", "multi_se_crops_cameras"],
}


def compose_fold_ensemble(variant: str, fold: int, args: argparse.Namespace) -> Path:
    """The run folder of an ``ENSEMBLES`` variant's fold model: its members' fold runs' last
    models (trained first, at the same ``--steps`` and ``--noise``), averaged, one view each,
    with the outputs every member has. Composed once; a folder composed from other weights
    than the members' runs hold now is refused, not replaced."""
    from lesionseg_training.ensemble import compose
    from lesionseg_training.replay import copy_replay
    from napari_lesionseg.core.model_folder import load_model_folder, save_model_folder

    names = [run_name(m, fold, args.noise, args.steps) for m in ENSEMBLES[variant]]
    lasts = [Path(args.out) / n / "last" for n in names]
    missing = [str(p) for p in lasts if not (p / "config.json").exists()]
    if missing:
        raise SystemExit(f"{variant} fold {fold}: its members' runs are not there ({', '.join(missing)}); train them "
                         f"first: --variants {','.join(ENSEMBLES[variant])} --folds {fold} with the same --steps/--out")
    models = [load_model_folder(p) for p in lasts]
    run_dir = Path(args.out) / run_name(variant, fold, args.noise, args.steps)
    shas = [m.config.weights_sha256 for m in models]
    if (run_dir / "last").exists():
        made = [m.get("weights_sha256") for m in load_model_folder(run_dir / "last").lineage.get("members", [])]
        if made != shas:
            raise SystemExit(f"{run_dir / 'last'}: composed from other weights than {', '.join(names)} hold now; "
                             "move it away to compose it again (nothing was changed)")
        return run_dir
    outputs = [t for t in models[0].config.network.outputs if all(t in m.config.network.outputs for m in models)]
    net, config, metrics, lineage = compose(models, outputs, f"cmp-{variant}", "none",
                                            f"compare_presets.py --variants {variant} --folds {fold}")
    first = lasts[0]
    save_model_folder(run_dir / "last", net, config, metrics, lineage,
                      fill_more=(lambda tmp: copy_replay(first, tmp)) if (first / "replay").is_dir() else None)
    return run_dir


def score_ensemble(variant: str, fold: int, args: argparse.Namespace, images: Path) -> dict:
    """An ``ENSEMBLES`` variant's row: nothing trained, its fold model composed
    (``compose_fold_ensemble``) and scored at full resolution as a trained variant's is."""
    from lesionseg_training.data import find_pairs, split_pairs
    from lesionseg_training.train_config import load_config

    if not args.full_res:
        raise SystemExit(f"{variant}: an ensemble has no training curve to report; give --full-res to score it")
    t0 = time.time()
    run_dir = compose_fold_ensemble(variant, fold, args)
    base, overrides = photo_recipe(variant)
    cfg = load_config(base, [f'data.images="{images}"', f"data.val_every={N_FOLDS}", f"data.val_offset={fold}",
                             *overrides])
    train_pairs, val_pairs = split_pairs(find_pairs(cfg.data), cfg.data)
    scores = full_resolution_report(run_dir, train_pairs, val_pairs, args.cache, ["MA", "EX", "SE", "OD"])
    if args.store_predictions:
        store_predictions(run_dir, val_pairs, args, variant, fold)
    return {"variant": variant, "fold": fold, "noise": args.noise or "none", "steps": args.steps,
            "val_aupr": None, "val_dice": None, **scores,  # composed, never validated: null in the results
            "minutes": round((time.time() - t0) / 60, 1), "val_ids": [p.id for p in val_pairs], "curve": [],
            "members": ENSEMBLES[variant]}


def photo_recipe(variant: str) -> tuple[str, list[str]]:
    """The variant's base config and the overrides that decide its photos and their preparation:
    without the pseudo-label settings or a consistency weight, which are the run's (they need the
    fold's pseudo-label folder or the unlabelled photos, named only when the run starts). An
    ensemble's are its first member's."""
    base, overrides = VARIANTS[ENSEMBLES[variant][0] if variant in ENSEMBLES else variant]
    return base, [o for o in overrides if not o.startswith(("data.pseudo_", UNLABELLED_WEIGHT))]


def _fold_pairs(images: Path, fold: int) -> list:
    from lesionseg_training.data import find_pairs, split_pairs
    from lesionseg_training.train_config import load_config

    cfg = load_config("default", [f'data.images="{images}"', f"data.val_every={N_FOLDS}", f"data.val_offset={fold}"])
    return split_pairs(find_pairs(cfg.data), cfg.data)[1]


OOF_SCORES = "oof_scores.json"  # beside a run's oof/ model: its scores on the fold's photos, to pool (oof_report.py)


def weights_sha256(folder: Path) -> str:
    import hashlib

    return hashlib.sha256((folder / "weights.safetensors").read_bytes()).hexdigest()


def kept_full_resolution(run_dir: Path) -> dict | None:
    """A finished run's full-resolution figures as its ``oof_scores.json`` keeps them, when they
    are its last model's (the same weights) and its ``oof/`` folder is there; else None. A fold
    pipeline resumed in a later sitting calibrated and scored its finished teacher again (some
    three minutes of the CPU a training needs) and rewrote the ``oof/`` folder its student's
    pseudo-labels came from."""
    from napari_lesionseg.core.metrics import DatasetScores
    from napari_lesionseg.core.model_folder import load_model_config

    kept, oof, last = run_dir / OOF_SCORES, run_dir / "oof", run_dir / "last"
    if not all(f.is_file() for f in (kept, oof / "config.json", oof / "weights.safetensors", last / "weights.safetensors")):
        return None
    state = json.loads(kept.read_text())
    if not state.get("model_sha256") == weights_sha256(last) == weights_sha256(oof):
        return None
    scores = {t: DatasetScores.from_state(d).summary() for t, d in state["scores"].items()}
    print(f"{run_dir.name}: finished and scored before, its kept full-resolution scores ({OOF_SCORES}) reported")
    return full_resolution_row(scores.pop("HE"), scores, load_model_config(oof).inference.threshold)


def full_resolution_row(he: dict, others: dict[str, dict], threshold: float) -> dict:
    """A run's ``fr_*`` results fields from its hemorrhage summary and each other output's."""
    out = {"fr_aupr": he["aupr"], "fr_dice_ds": he["dice_ds"], "fr_dice_img": he["dice_img"], "fr_threshold": threshold}
    for t, ts in others.items():
        out.update({f"fr_aupr_{t}": ts["aupr"], f"fr_dice_ds_{t}": ts["dice_ds"], f"fr_dice_img_{t}": ts["dice_img"]})
    return out


def full_resolution_report(run_dir: Path, train_pairs: list, val_pairs: list, cache: str | None,
                           types: list[str] | None = None) -> dict:
    """The run's last model (no checkpoint chosen) scored on its fold's photos at full
    resolution through the shipped inference path (tiling, TTA, 8-bit probabilities, as
    ``lesionseg evaluate``), with its calibration and thresholds fitted on training photos
    only (a few, every k-th: the photos that report the score choose nothing). Pooled AUPR,
    dataset and per-image Dice; per other output too (``types``)."""
    from lesionseg_training.calibrate import calibrate
    from lesionseg_training.data import calibration_subset, prepare_pair
    from napari_lesionseg.core.atomic import atomic_write_text
    from napari_lesionseg.core.batch import evaluate_pairs
    from napari_lesionseg.core.model_folder import load_model_folder, save_model_folder
    from napari_lesionseg.core.progress import run_to_end

    model = load_model_folder(run_dir / "last")
    fit = [prepare_pair(p, model.config.preprocess, Path(cache) if cache else None, model.config.network.outputs)
           for p in calibration_subset(train_pairs)]
    config, _ = calibrate(model.net, model.config, fit)
    # held_out: the fold's photos, which this model never trained on (LoadedModel.unseen_photos),
    # so a fold model can stand in where a benchmark needs unseen photos (benchmarks/adapt.py)
    held = {"photos": [p.id for p in val_pairs], "why": "this cross-validation fold's photos: never trained on"}
    folder = save_model_folder(run_dir / "oof", model.net, config,
                               {"calibrated_on": [it.id for it in fit], "held_out": held}, model.lineage, overwrite=True)
    scored = load_model_folder(folder)
    others = [t for t in (types or []) if t in scored.config.network.outputs]
    ds, res = run_to_end(evaluate_pairs(scored, val_pairs, types=others))
    atomic_write_text(run_dir / OOF_SCORES, json.dumps({"model_sha256": weights_sha256(folder), **res.score_state()}))
    return full_resolution_row(res.summary, res.summary.get("types", {}), scored.config.inference.threshold)


def store_predictions(run_dir: Path, val_pairs: list, args: argparse.Namespace, variant: str, fold: int) -> None:
    """What the run's last model predicts for its fold's photos, kept for an out-of-fold
    calibration in a later sitting (``lesionseg_training.oof_predictions``; a file already
    there is kept)."""
    from lesionseg_training.oof_predictions import store_fold

    out = Path(args.store_predictions) / f"{run_dir.name}.npz"
    if out.exists():
        print(f"{out}: already there, kept")
        return
    note = f"{variant}, fold {fold} of {N_FOLDS}, {args.steps or args.minutes} {'steps' if args.steps else 'minutes'}, " \
           f"seed {args.seed}, {platform.processor() or platform.machine()}, {time.strftime('%Y-%m-%d')}"
    ids = store_fold(run_dir / "last", val_pairs, out, Path(args.cache) if args.cache else None, note)
    print(f"{len(ids)} held-out photos' predictions -> {out}")


def side_by_side(fold: int, args: argparse.Namespace) -> list[dict]:
    """This fold's variants as simultaneous child processes, one thread each; their rows."""
    import subprocess

    procs, outs = [], []
    for variant in args.variants.split(","):
        out = Path(args.work) / f"rows-{variant}-f{fold}-{args.noise or 'none'}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, __file__, "--variants", variant, "--folds", str(fold), "--threads", "1",
               "--minutes", str(args.minutes), "--images", args.images, "--seed", str(args.seed),
               "--eval-every", str(args.eval_every), "--out", args.out, "--work", args.work, "--results", str(out),
               "--steps", str(args.steps), "--unlabeled", args.unlabeled] + \
              (["--pseudo-teacher", args.pseudo_teacher] if args.pseudo_teacher else []) + \
              (["--resume"] if args.resume else []) + \
              (["--full-res"] if args.full_res else []) + \
              (["--store-predictions", args.store_predictions] if args.store_predictions else [])
        cmd += (["--noise", args.noise] if args.noise else []) + (["--cache", args.cache] if args.cache else [])
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL))
        outs.append(out)
    for p in procs:
        if p.wait() != 0:
            raise SystemExit(f"a side-by-side run failed: {p.args}")
    return [r for out in outs for r in json.loads(out.read_text())["runs"]]


def at_equal_steps(rows: list[dict]) -> dict[tuple[str, int], dict]:
    """Per (variant, fold): the score at the largest step at which every variant of that fold
    validated (the equal-steps comparison from the same runs)."""
    out = {}
    for fold in {r["fold"] for r in rows}:
        same = [r for r in rows if r["fold"] == fold and r["curve"]]
        if not same:
            continue
        common = set.intersection(*({c["step"] for c in r["curve"]} for r in same))
        if not common:
            continue
        for r in same:
            out[(r["variant"], fold)] = next(c for c in r["curve"] if c["step"] == max(common))
    return out


def summarise(rows: list[dict]) -> list[dict]:
    eq = at_equal_steps(rows)
    table = []
    for variant in dict.fromkeys(r["variant"] for r in rows):
        rs = [r for r in rows if r["variant"] == variant]

        def ms(vals: list[float | None]) -> str:
            """Mean ± sd of the values there (a composed ensemble has no validation: None, or NaN in
            results files written before 2026-12-06); "-" when there are none."""
            vals = [v for v in vals if v is not None and v == v]
            if not vals:
                return "-"
            return f"{statistics.mean(vals):.3f} ± {statistics.stdev(vals):.3f}" if len(vals) > 1 else f"{vals[0]:.3f}"

        eqs = [eq[(variant, r["fold"])] for r in rs if (variant, r["fold"]) in eq]
        table.append({"variant": variant, "folds": len(rs), "aupr": ms([r["val_aupr"] for r in rs]),
                      "dice": ms([r["val_dice"] for r in rs]), "steps": round(statistics.mean(r["steps"] for r in rs)),
                      "s_per_step": round(statistics.mean(60 * r["minutes"] / max(r["steps"], 1) for r in rs), 2),
                      "eq_step": min((e["step"] for e in eqs), default=0),
                      "eq_aupr": ms([e["val_aupr"] for e in eqs]) if eqs else "-",
                      "eq_dice": ms([e["val_dice"] for e in eqs]) if eqs else "-"})
    return table


def _cell(v: float | None) -> str:
    """A validation score for the log, "-" for none (a composed ensemble)."""
    return "-" if v is None or v != v else f"{v:.3f}"


def print_tables(rows: list[dict], budget: str, noise: str | None) -> None:
    """The validation table (mean ± sd over folds, and at equal steps) and, where the runs have
    them, the full-resolution scores."""
    table = summarise(rows)
    print(f"\nnoise: {noise or 'none'}; {budget} per run; last validation, mean ± sd over folds")
    print(f"{'variant':15s} {'folds':>5s} {'AUPR':>15s} {'Dice':>15s} {'steps':>6s} {'s/step':>6s} "
          f"{'@step':>6s} {'AUPR @step':>15s} {'Dice @step':>15s}")
    for t in table:
        print(f"{t['variant']:15s} {t['folds']:5d} {t['aupr']:>15s} {t['dice']:>15s} {t['steps']:6d} "
              f"{t['s_per_step']:6.2f} {t['eq_step']:6d} {t['eq_aupr']:>15s} {t['eq_dice']:>15s}")
    if any("fr_aupr" in r for r in rows):
        print("\nfull resolution (shipped inference path, last model, calibrated on training photos), mean ± sd:")
        keys = ["fr_aupr", "fr_dice_ds", "fr_dice_img"] + [f"fr_{m}_{t}" for t in ("MA", "EX", "SE", "OD")
                                                           for m in ("aupr", "dice_img")]
        for variant in dict.fromkeys(r["variant"] for r in rows):
            rs = [r for r in rows if r["variant"] == variant and "fr_aupr" in r]
            cells = []
            for k in keys:
                vals = [float(r[k]) for r in rs if r.get(k) is not None and r[k] == r[k]]
                if vals:
                    sd = f" ± {statistics.stdev(vals):.3f}" if len(vals) > 1 else ""
                    cells.append(f"{k[3:]} {statistics.mean(vals):.3f}{sd}")
            print(f"{variant:15s} " + ", ".join(cells))


def report(files: list[str], out: str | None) -> None:
    """``--report``: the tables of runs already made (one or more results files, e.g. runs made
    two at a time into separate files); with ``--results``, the runs merged into that file."""
    rows = [r for f in files for r in json.loads(Path(f).read_text())["runs"]]
    rows = list({json.dumps(r, sort_keys=True): r for r in rows}.values())  # a run listed in two files counts once
    groups = dict.fromkeys((r["noise"], r.get("steps_budget") or 0, r.get("minutes_budget")) for r in rows)
    for noise, steps, minutes in groups:
        same = [r for r in rows if (r["noise"], r.get("steps_budget") or 0, r.get("minutes_budget")) ==
                (noise, steps, minutes)]
        print_tables(same, f"{steps} steps" if steps else f"{minutes} min", None if noise == "none" else noise)
    if out:
        Path(out).write_text(json_text({"runs": rows}, indent=1))


def main() -> None:
    from lesionseg_training.data import FINAL_CALIBRATION_PHOTOS

    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--images", default=str(DATA))
    ap.add_argument("--variants", default="default,default_dale", help="comma-separated: " + ",".join(VARIANTS) + "; composed from their members' runs "
                         "(train those first; scored with --full-res): " + ",".join(ENSEMBLES))
    ap.add_argument("--folds", default="0,1,2", help=f"comma-separated fold numbers (0..{N_FOLDS - 1})")
    ap.add_argument("--noise", default=None, help="e.g. missed=0.5,outline=8 (training masks only)")
    ap.add_argument("--steps", type=int, default=0,
                    help="a step budget instead of --minutes (the same result on a busy machine; resumable)")
    ap.add_argument("--resume", action="store_true", help="continue interrupted runs from their state.pt")
    ap.add_argument("--full-res", action="store_true",
                    help="also score each run's last model on its fold at full resolution (TTA, 8-bit), calibrated "
                         f"on {FINAL_CALIBRATION_PHOTOS} of its training photos")
    ap.add_argument("--store-predictions", default=None, metavar="DIR",
                    help="keep each run's last model's predictions for its fold's photos as DIR/<run>.npz (for "
                         "lesionseg_training.oof_calibrate --predictions; e.g. benchmarks/results/oof_predictions)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init", default=None, metavar="MODEL_DIR",
                    help="the weights a pretrained variant (" + ", ".join(sorted(PRETRAINED)) + ") starts from")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--side-by-side", action="store_true",
                    help="run a fold's variants at the same time, one thread each (fair under the same load)")
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--snapshots", action="store_true",
                    help="keep the weights of every validation (run_dir/snapshots/step_<N>): for snapshot_map.py")
    ap.add_argument("--out", default="/tmp/compare_runs")
    ap.add_argument("--work", default="/tmp/compare_work")
    ap.add_argument("--cache", default=None, help="folder for prepared working-grid arrays (reused between runs)")
    ap.add_argument("--results", default=str(HERE / "results" / "compare_presets.json"))
    ap.add_argument("--pseudo-teacher", default=None,
                    help="pseudo-label variants: the model labelling the unlabelled photos for fold {fold}, e.g. "
                         "/tmp/cv/runs/default-f{fold}-s2000/oof (a fold model: it never trained on the fold)")
    ap.add_argument("--unlabeled", default=str(DATA.parent.parent / "idrid_unlabeled" / "images"),
                    help="folder of unlabelled photos for pseudo-label and mean-teacher variants")
    ap.add_argument("--report", nargs="+", metavar="RESULTS",
                    help="train nothing: print the tables of the runs in these results files (merged into "
                         "--results when that is given too)")
    args = ap.parse_args()
    unknown = [v for v in args.variants.split(",") if v not in VARIANTS and v not in ENSEMBLES]
    if unknown:
        ap.error(f"--variants: unknown {', '.join(unknown)}")
    if args.report:
        given = any(a == "--results" or a.startswith("--results=") for a in sys.argv[1:])
        return report(args.report, args.results if given else None)
    clean = Path(args.images)
    images = clean
    if args.noise:
        kv = dict(item.split("=") for item in args.noise.split(","))
        images = noisy_copy(clean, Path(args.work), float(kv.get("missed", 0)), int(kv.get("outline", 0)))
    if args.side_by_side and args.cache:  # prepare every photo once, before the children share the cache
        from lesionseg_training.data import find_pairs, prepare_pair
        from lesionseg_training.train_config import load_config

        for variant in args.variants.split(","):
            base, overrides = photo_recipe(variant)
            for root in dict.fromkeys([clean, images]):
                cfg = load_config(base, [f'data.images="{root}"', *overrides])
                for pair in find_pairs(cfg.data):
                    prepare_pair(pair, cfg.model.preprocess, Path(args.cache), cfg.model.network.outputs)
    rows = []
    for fold in [int(f) for f in args.folds.split(",")]:
        if args.side_by_side:
            rows += side_by_side(fold, args)
        else:
            rows += [run_one(variant, fold, args, images, clean) for variant in args.variants.split(",")]
        for r in rows[-len(args.variants.split(",")):]:
            print(f"{r['variant']:15s} fold {fold}  AUPR {_cell(r['val_aupr'])}  Dice {_cell(r['val_dice'])}  "
                  f"steps {r['steps']}  {r['minutes']} min", flush=True)
    print_tables(rows, f"{args.steps} steps" if args.steps else f"{args.minutes} min", args.noise)
    results = Path(args.results)
    old = json.loads(results.read_text()) if results.exists() else {}
    runs = [r for r in old.get("runs", []) if not any(
        (r["variant"], r["fold"], r["noise"], r.get("minutes_budget"), r.get("steps_budget", 0)) ==
        (x["variant"], x["fold"], x["noise"], None if args.steps else args.minutes, args.steps) for x in rows)]
    runs += [{**r, "minutes_budget": None if args.steps else args.minutes, "steps_budget": args.steps,
              "date": time.strftime("%Y-%m-%d")} for r in rows]
    results.parent.mkdir(exist_ok=True)
    results.write_text(json_text({"runs": runs}, indent=1))


if __name__ == "__main__":
    main()
