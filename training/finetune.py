"""``fine_tune``: a new model version from a model folder and a few corrected image/mask
pairs. Yields training events (for the plugin's live plot); returns the new model folder,
whose ``metrics.json`` and ``lineage.json`` record old-vs-new scores on held-out pairs, the
parent model and the hashes of the data it saw."""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from collections.abc import Generator
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from napari_lesionseg.core.atomic import TMP_SUFFIX
from napari_lesionseg.core.batch import evaluate_pairs
from napari_lesionseg.core.dataclass_io import ConfigError
from napari_lesionseg.core.errors import LesionsegInputError
from napari_lesionseg.core.lesion_types import HE
from napari_lesionseg.core.model_folder import load_model_folder, save_model_folder
from napari_lesionseg.core.pairs import Pair, marks_a_lesion, require_known_types
from napari_lesionseg.core.progress import run_to_end

from .data import pair_digests
from .train_config import DataConfig, OptimConfig, RunConfig, TrainConfig
from .trainer import train

CROPS_PER_IMAGE_EPOCH = 8
FINETUNE_CROP = 256  # px, on the model's working grid
MAX_TIME_BOUND_STEPS = 100_000  # with only a time budget, the clock ends the training
TIME_BOUND_EVAL_EVERY = 15
WRITE_SECONDS = 8.0  # calibration, writing the model folder and slack: 4.0 overshot 2 min by up to 2 s (benchmarks/adapt.py)


@dataclass
class Budget:
    """Stop after ``steps`` (or ``epochs`` worth of steps), or after ``minutes``, whichever
    first. ``minutes`` is the whole fine-tune's (scoring the old and the new model, training,
    writing the folder); with neither steps nor epochs, training fills what scoring leaves."""

    steps: int | None = None
    epochs: int | None = None
    minutes: float | None = None
    lr: float = 2e-4
    freeze_encoder: bool = False  # = train_only "decoder"
    train_only: str = "all"  # all | decoder | early | norm: the parameters the fine-tune changes
    # an ensemble's members the fine-tune changes (empty: all). Training one of the default's two
    # networks kept mild cameras better but recovered less of a harsh one (benchmarks/README.md)
    members: tuple[int, ...] = ()
    # keep the base model's BatchNorm statistics: a few photos' crops in batches of four otherwise
    # replace them (measured: benchmarks/README.md "Adapting to a new camera")
    freeze_batchnorm: bool = True
    batch_size: int = 4
    # hold out about a quarter of the pairs (3+) to score old vs new and choose the checkpoint;
    # False: train on all of them, scores then said to be on the training photos
    hold_out: bool = True
    # threshold and calibration of the new model: "held_out" refit on the held-out pairs,
    # "all" refit on every corrected pair, "keep" the base model's
    calibration: str = "keep"
    # share of the training crops drawn from the base model's replay photos (its folder's
    # replay/, training/replay.py), against forgetting the photos it was trained on
    replay_share: float = 0.5
    seed: int = 0  # crops, augmentation and initial randomness of the run
    # the base model's weights compete with the run's checkpoints on the held-out pairs: when
    # none beats them, the new version keeps them (metrics "best_step" 0)
    keep_base_if_better: bool = True
    # with only a time budget, stop after this many steps even if time is left: filling two
    # minutes ran 250-280 steps on a fast CPU and cost mild cameras and the original one more than
    # 120 did, at twice the time (benchmarks/README.md); a slower machine stops on time first.
    # 0 or None: train until the time is up
    max_steps: int | None = 120
    # forgetting check (with replay photos and keep_base_if_better): a checkpoint whose AUPR on
    # fixed crops of the replay photos (any output) fell more than this below the base's is never
    # chosen. None: no check
    guard_margin: float | None = None
    # weight-space blend against forgetting (WiSE-FT, Wortsman et al. 2022): the new version's
    # weights are this share of the base's plus the rest of the chosen checkpoint's, after the
    # checkpoint is chosen. Half kept the original photos within 0.02 Dice in 18 of 18 runs on two
    # folds where the checkpoint alone did in 10, at some of a harsh camera's recovery
    # (benchmarks/README.md "Blending"). None or 0: the checkpoint as trained
    blend: float | None = 0.5
    # when the click was (time.time()): ``minutes`` counts from there, so a process's start
    # (importing torch: 1.5-4 s) is inside the budget; None: from when fine_tune is called
    started_at: float | None = None

    def __post_init__(self) -> None:
        """Refuse an out-of-range budget before anything is read, trained or written, naming
        the field and ``lesionseg finetune``'s option for it."""
        def bad(name: str, what: str) -> None:
            raise ConfigError(f"--{name.replace('_', '-')} (Budget.{name}): must be {what}, "
                              f"not {getattr(self, name)!r}")

        for name in ("steps", "epochs", "batch_size"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                bad(name, "a whole number of at least 1")
        if self.max_steps is not None and (not isinstance(self.max_steps, int) or self.max_steps < 0):
            bad("max_steps", "a whole number of at least 0 (0: train until the time is up)")
        if self.minutes is not None and not (math.isfinite(self.minutes) and self.minutes > 0):
            bad("minutes", "more than 0")
        if not (math.isfinite(self.lr) and 0 < self.lr < 1):
            bad("lr", "between 0 and 1 (the default is 2e-4)")
        if not 0.0 <= self.replay_share <= 1.0:
            bad("replay_share", "within 0-1 (a share of the crops)")
        if self.blend is not None and not 0.0 <= self.blend <= 1.0:
            bad("blend", "within 0-1 (the base model's share of the weights)")
        if self.guard_margin is not None and not math.isfinite(self.guard_margin):
            bad("guard_margin", "a finite AUPR margin")
        if self.calibration not in ("held_out", "all", "keep"):
            bad("calibration", "held_out, all or keep")
        if self.train_only not in ("all", "decoder", "early", "norm"):
            bad("train_only", "all, decoder, early or norm")
        if any(not isinstance(i, int) or i < 0 for i in self.members):
            bad("members", "member indices of 0 or more")


def check_blend_share(base_share: float) -> None:
    """Refuse a blend share outside 0-1 (``blend_states``; a ``Budget`` refuses one when made)."""
    if not 0.0 <= base_share <= 1.0:
        raise ValueError(f"blend: the base's share must be within 0-1, not {base_share}")


def blend_states(base: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor],
                 base_share: float) -> dict[str, torch.Tensor]:
    """``base_share`` of ``base``'s floating-point tensors plus the rest of ``tuned``'s, key by
    key; counters (integer buffers) are ``tuned``'s. The two must be the same network's."""
    check_blend_share(base_share)
    if base.keys() != tuned.keys():
        raise ValueError(f"blend: the two networks differ: {sorted(base.keys() ^ tuned.keys())[:5]}")
    return {k: (base_share * base[k] + (1.0 - base_share) * v).to(v.dtype) if v.is_floating_point() else v.clone()
            for k, v in tuned.items()}


def lesion_pairs(pairs: list[Pair], outputs: list[str] | tuple[str, ...] = (HE,)) -> set[str]:
    """Ids of the pairs that mark at least one lesion pixel of a type among ``outputs`` they
    were reviewed for (``marks_a_lesion``)."""
    return {p.id for p in pairs if marks_a_lesion(p, outputs)}


def check_has_lesions(pairs: list[Pair], with_lesions: set[str]) -> None:
    """Refuse corrections that hold no lesion pixel at all: training on them teaches the model
    to find nothing, and validation on empty masks scores that as perfect (Dice 0 -> 1)."""
    if with_lesions:
        return
    names = ", ".join(p.mask.name if not p.label_map else p.id for p in pairs[:5])
    raise LesionsegInputError(pairs[0].mask.parent if len(pairs) > 1 else pairs[0].mask,
                              f"none of the {len(pairs)} corrected mask(s) ({names}) marks any lesion: "
                              "fine-tuning on them would teach the model to find nothing; correct at least "
                              "one photo with lesions")


def split_for_finetune(pairs: list[Pair], with_lesions: set[str] | None = None) -> tuple[list[Pair], list[Pair], str]:
    """Hold out about a quarter (at least one) when there are 3+ pairs, taken from the pairs
    with lesions (a held-out set without lesions would score any empty model as perfect) and
    leaving at least one with lesions to train on; otherwise validate on the training pairs
    and say so."""
    ordered = sorted(pairs, key=lambda p: p.id)
    positive = [p for p in ordered if with_lesions is None or p.id in with_lesions]
    if len(ordered) >= 3 and len(positive) >= 2:
        n_val = min(max(1, len(ordered) // 4), len(positive) - 1)
        val = positive[-n_val:]
        train = [p for p in ordered if p not in val]
        return train, val, f"{len(val)} of {len(ordered)} corrected images held out for validation"
    return ordered, ordered, (f"{len(ordered)} corrected image(s), {len(positive)} with lesions: validating on the "
                              "training images themselves (scores are optimistic)")


SCORED = ("aupr", "dice_ds", "dice_img", "recall_ds", "precision_ds")


def _score(model_dir: Path, pairs: list[Pair]) -> dict[str, Any]:
    """The model's scores on ``pairs``: hemorrhages' when a pair was reviewed for them, else
    those of the first other output they were reviewed for (``"type"`` says which)."""
    model = load_model_folder(model_dir)
    if any(p.knows(HE) for p in pairs):
        ds, _ = run_to_end(evaluate_pairs(model, pairs, tta="none"))
        s = ds.summary()
        return {k: s[k] for k in SCORED}
    t = next((t for t in model.config.network.outputs if any(p.knows(t) for p in pairs)), None)
    if t is None:  # (require_known_types keeps this from happening)
        return dict.fromkeys(SCORED, float("nan"))
    _, res = run_to_end(evaluate_pairs(model, pairs, tta="none", types=[t]))
    s = res.scores[t].summary()
    return {**{k: s[k] for k in SCORED}, "type": t}


def _final_model(best: Path, base, pairs: list[Pair], cfg: TrainConfig, how: str, out: Path,
                 blend: tuple[dict[str, torch.Tensor], float] | None = None) -> Path:
    """The chosen checkpoint as the new version: its weights blended with the base's when
    ``blend`` = (the base's weights, its share) is given (``blend_states``); its threshold and
    calibration as the trainer fitted them on the held-out pairs, refit on every corrected pair,
    or the base model's."""
    if how == "held_out" and blend is None:
        return best
    tuned = load_model_folder(best)
    if blend is not None and tuned.metrics.get("step") != 0:  # the base kept: nothing to blend
        tuned.net.load_state_dict(blend_states(blend[0], tuned.net.state_dict(), blend[1]))
    config = tuned.config
    if how == "keep":
        inf = replace(tuned.config.inference, threshold=base.config.inference.threshold,
                      calibration=base.config.inference.calibration, types=list(base.config.inference.types))
        config = replace(tuned.config, inference=inf)
    elif how == "all":
        from .calibrate import calibrate
        from .trainer import prepare_items

        config, _ = calibrate(tuned.net, replace(tuned.config, inference=replace(tuned.config.inference,
                                                                                 calibration=None)),
                              prepare_items(pairs, cfg))
    return save_model_folder(out, tuned.net, config, tuned.metrics, tuned.lineage)


def fine_tune(base_model_dir: str | Path, pairs: list[Pair], budget: Budget, out_dir: str | Path,
              *, threads: int | None = None, replay: list | None = None) -> Generator[dict[str, Any], None, Path]:
    """Fine-tune the model in ``base_model_dir`` on ``pairs``; write the new model folder to
    ``out_dir`` (which must not exist). Nothing else is left behind."""
    out = Path(out_dir)
    if out.exists():
        raise FileExistsError(f"{out}: already exists; fine-tuning never overwrites a model")
    if not pairs:
        raise LesionsegInputError(None, "no corrected images to fine-tune on: save at least one correction first")
    t0 = time.time() if budget.started_at is None else min(time.time(), budget.started_at)
    base = load_model_folder(base_model_dir)
    outputs = base.config.network.outputs
    where = pairs[0].mask.parent.parent if pairs[0].label_map else pairs[0].mask.parent  # a project's labels/
    require_known_types(pairs, outputs, where, f"model '{base.version}' has nothing to learn from them",
                        "fine-tune a model with those outputs (the bundled multi), or review these photos for "
                        f"{', '.join(outputs)} too")
    with_lesions = lesion_pairs(pairs, outputs)
    check_has_lesions(pairs, with_lesions)
    if replay is None and budget.replay_share:
        from .replay import load_replay

        replay = load_replay(base_model_dir, base.config.preprocess, base.config.network.outputs)
    if budget.hold_out:
        train_pairs, val_pairs, how = split_for_finetune(pairs, with_lesions)
    else:
        train_pairs = val_pairs = sorted(pairs, key=lambda p: p.id)
        how = (f"all {len(pairs)} corrected image(s) trained on: validating on the training images themselves "
               "(scores are optimistic)")
    yield {"event": "plan", "train": [p.id for p in train_pairs], "val": [p.id for p in val_pairs],
           "validation": how, "base": str(base_model_dir), "base_version": base.version,
           "replay": len(replay) if replay else 0}
    time_bound = budget.minutes is not None and budget.steps is None and budget.epochs is None
    steps_per_epoch = max(1, math.ceil(len(train_pairs) * CROPS_PER_IMAGE_EPOCH / budget.batch_size))
    steps = budget.steps if budget.steps is not None else (budget.epochs or 5) * steps_per_epoch
    if time_bound:
        steps = budget.max_steps or MAX_TIME_BOUND_STEPS
    val_ids = [p.id for p in val_pairs]
    cfg = TrainConfig(
        model=replace(base.config, name=f"{base.version}-ft-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}",
                      weights_sha256=None),
        # 256-px crops, or the whole working grid of a model that works at less (a crop larger than
        # the photo is mostly padding)
        data=DataConfig(batch_size=budget.batch_size, crop_size=min(FINETUNE_CROP, base.config.preprocess.fov_diameter)),
        optim=OptimConfig(lr=budget.lr, warmup_steps=5 if time_bound else min(20, steps // 5)),
        run=RunConfig(steps=steps, minutes=budget.minutes, eval_every=TIME_BOUND_EVAL_EVERY if time_bound
                      else max(1, steps // 4), log_every=1, threads=threads, seed=budget.seed,
                      freeze_encoder=budget.freeze_encoder, train_only=budget.train_only,
                      train_members=list(budget.members),
                      freeze_batchnorm=budget.freeze_batchnorm, validate_start=budget.keep_base_if_better),
    )
    # The run's checkpoints live in a hidden temp folder, removed when the run ends however it
    # ends; one left by a killed process is never taken for a model (Registry skips hidden
    # folders) and is removed as stale when the project is next opened.
    out.parent.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix=f".{out.name}.run.", suffix=TMP_SUFFIX, dir=out.parent))
    try:
        t_score = time.time()
        old = _score(Path(base_model_dir), val_pairs)
        score_s = time.time() - t_score
        yield {"event": "baseline", **{f"old_{k}": v for k, v in old.items()}}
        if budget.minutes is not None:
            # the whole run keeps to budget.minutes: training gets what is left after preparing
            # its photos, scoring the new model (as long as the old took) and writing it
            prep_s = 0.5 * score_s / max(1, len(val_pairs)) * len(train_pairs)
            left = 60.0 * budget.minutes - (time.time() - t0) - prep_s - 1.1 * score_s - WRITE_SECONDS
            cfg = replace(cfg, run=replace(cfg.run, minutes=max(left, 5.0) / 60.0))
            yield {"event": "training_budget", "seconds": round(max(left, 5.0), 1)}
        if budget.blend:
            base_state = {k: v.detach().clone() for k, v in base.net.state_dict().items()}
        net = base.net.train()
        digests = pair_digests(pairs)  # hashed once: the run's lineage and the new version's
        guard = None
        if budget.guard_margin is not None and replay and budget.keep_base_if_better:
            from .replay import guard_crops

            guard = (guard_crops(replay, seed=budget.seed), budget.guard_margin)
        run = train(cfg, run_dir, init_from=net, pairs=(train_pairs, val_pairs if val_ids else train_pairs),
                    lineage={"data": {p.id: digests[p.id] for p in train_pairs}},
                    replay=(replay, budget.replay_share) if replay and budget.replay_share else None, guard=guard)
        while True:
            try:
                ev = next(run)
            except StopIteration as done:
                best = done.value
                break
            if ev.get("event") == "done":  # its best checkpoint is in the run folder removed below
                steps = ev["step"]
                ev = {k: v for k, v in ev.items() if k != "best"}
            yield ev
        best = _final_model(best, base, pairs, cfg, budget.calibration, run_dir / "final",
                            (base_state, budget.blend) if budget.blend else None)
        new = _score(best, val_pairs)
        tuned = load_model_folder(best)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    best_step = int(tuned.metrics.get("step", steps))
    metrics = {"validation": how, "val_images": val_ids, "old": old, "new": new,
               "seconds": round(time.time() - t0, 1), "steps": steps, "best_step": best_step}
    if budget.blend and best_step != 0:
        metrics["blend"] = {"base_share": budget.blend,
                            "what": "the new weights are this share of the base's plus the rest of the chosen "
                                    "checkpoint's (WiSE-FT)"}
    if guard is not None:
        metrics["forgetting_guard"] = {"margin": budget.guard_margin, "crops": len(guard[0]),
                                       "what": "AUPR on fixed crops of the base model's replay photos; a checkpoint "
                                               "that fell more than the margin below the base's was not chosen"}
    lineage = {
        "parent": {"path": str(base_model_dir), "version": base.version, "weights_sha256": base.config.weights_sha256},
        "data": digests,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "kind": "finetune",
        "recipe": tuned.lineage.get("recipe"),  # how the fine-tune trained (steps, lr, frozen parts, ...)
    }
    from .replay import copy_replay

    save_model_folder(out, tuned.net, tuned.config, metrics, lineage,
                      fill_more=lambda tmp: copy_replay(base_model_dir, tmp))
    yield {"event": "finished", "model": str(out), "steps": steps, "best_step": best_step,
           **{f"old_{k}": v for k, v in old.items()},
           **{f"new_{k}": v for k, v in new.items()}}
    return out

