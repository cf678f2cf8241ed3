"""``lesionseg train`` / ``lesionseg finetune`` and ``python -m lesionseg_training ...``: one
parser, one code path. Under ``torchrun`` the same ``train`` runs distributed."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model from a config (a preset name or a TOML file)")
    p.add_argument("--config", default=None,
                   help="TOML file, or a preset: default, tiny, ... (with --resume: the run's own, unless given)")
    p.add_argument("--images", default=None, help="IDRiD-layout root, or an images folder (with --masks)")
    p.add_argument("--masks", default=None)
    p.add_argument("--minutes", type=float, default=None,
                   help="wall-clock budget (a resumed run's earlier sittings count towards it)")
    p.add_argument("--steps", type=int, default=None, help="step budget (the whole run's, as --minutes)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--out", type=Path, required=True, help="run folder (best model ends in OUT/best)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out with its own recipe (--steps / --minutes may extend it)")
    p.add_argument("--final", action="store_true",
                   help="every photo trains (a final model, after cross-validation chose the recipe): the last "
                        "model is kept, calibrated on 12 of its training photos as the folds' models were "
                        "(data.final)")
    p.add_argument("--init", type=Path, default=None, metavar="MODEL_DIR",
                   help="start from a model folder's weights (same network and preprocessing as the config)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_train)


def add_finetune_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("finetune", help="fine-tune a model folder on corrected image/mask pairs")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", type=Path, help="images folder (with --masks), or an IDRiD-layout folder")
    src.add_argument("--project", type=Path, help="a plugin project folder: its latest saved corrections")
    p.add_argument("--masks", type=Path, default=None,
                   help="the masks' folder, matched to --images by stem (not needed for an IDRiD-layout folder)")
    p.add_argument("--model", type=Path, default=None,
                   help="base model folder or bundled model name (default: with --project the project's active "
                        "model, as the plugin's button; else the shipped default model)")
    p.add_argument("--out", type=Path, default=None,
                   help="the new model folder (must not exist; default with --project: a new version in the "
                        "project's models/, as the plugin's button makes)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--epochs", type=int, default=None,
                   help="passes over the corrected photos, 8 crops a photo each (with --minutes: whichever ends first)")
    g.add_argument("--steps", type=int, default=None, help="training steps (with --minutes: whichever ends first)")
    p.add_argument("--minutes", type=float, default=None,
                   help="wall-clock budget of the whole fine-tune (scoring old and new, training, writing); "
                        "without --steps/--epochs the training fills what scoring leaves")
    p.add_argument("--lr", type=float, default=2e-4, help="peak learning rate (default: 2e-4, the button's)")
    p.add_argument("--max-steps", type=int, default=None,
                   help="with --minutes only: stop after this many steps even if time is left (default: the "
                        "button's, 120; 0: train until the time is up)")
    p.add_argument("--replay-share", type=float, default=0.5,
                   help="share of the crops drawn from the base model's replay photos (0: none)")
    p.add_argument("--calibration", choices=["keep", "all", "held_out"], default="keep",
                   help="threshold and calibration of the new model: the base model's (keep), refit on every "
                        "corrected photo (all) or on the held-out ones (held_out)")
    p.add_argument("--seed", type=int, default=0, help="seed of the crops and augmentation")
    p.add_argument("--no-hold-out", action="store_true",
                   help="train on every corrected photo (the scores are then on the training photos)")
    p.add_argument("--freeze-encoder", action="store_true", help="the same as --train-only decoder")
    p.add_argument("--train-only", choices=["all", "decoder", "early", "norm"], default="all",
                   help="the parameters the fine-tune changes: all, the decoder (encoder frozen), the "
                        "encoder's first two levels, or the BatchNorm scales and shifts (benchmarks/adapt.py)")
    p.add_argument("--members", type=_member_list, default=(), metavar="I,J",
                   help="an ensemble model: fine-tune only these members (0-based), the others keep the base "
                        "model's weights (default: every member; benchmarks/README.md measures both)")
    p.add_argument("--freeze-batchnorm", action=argparse.BooleanOptionalAction, default=True,
                   help="keep the base model's BatchNorm statistics (default; benchmarks/adapt.py measures it)")
    p.add_argument("--keep-base", action=argparse.BooleanOptionalAction, default=True,
                   help="score the base model as step 0 and keep its weights when no fine-tuned checkpoint "
                        "scores better (default); --no-keep-base takes the run's best checkpoint whatever it scores")
    p.add_argument("--guard-margin", type=float, default=None, metavar="AUPR",
                   help="forgetting check: never choose a checkpoint whose AUPR on fixed crops of the base "
                        "model's replay photos fell more than this below the base's (default: no check)")
    p.add_argument("--blend", type=float, default=None, metavar="SHARE",
                   help="against forgetting: the new weights are this share (0-1) of the base model's plus the "
                        "rest of the fine-tune's (WiSE-FT; default 0.5; 0: the fine-tune's as trained)")
    p.add_argument("--events", choices=["text", "jsonl"], default="text",
                   help="jsonl: one JSON event per line on stdout (what the plugin reads)")
    p.set_defaults(func=cmd_finetune)


def _emit(ev: dict, mode: str) -> None:
    if mode == "jsonl":
        print(json.dumps(ev), flush=True)
        return
    kind = ev.get("event")
    if kind == "step":
        from napari_lesionseg.core.progress import duration_text

        left = f"  (about {duration_text(ev['left'])} of training left)" if isinstance(ev.get("left"), (int, float)) else ""
        print(f"step {ev['step']:6d}  loss {ev['loss']:.4f}  lr {ev['lr']:.2e}  {ev['elapsed']:.0f}s{left}", flush=True)
    elif kind in ("eval", "baseline", "finished", "plan", "error", "done", "data", "resumed"):
        print(kind + ": " + ", ".join(_field(k, v) for k, v in ev.items() if k != "event"), flush=True)


def _field(key: str, value: object) -> str:
    """One ``key=value`` of an event line: times in whole seconds with their unit, other
    numbers to four decimals."""
    if key in ("elapsed", "seconds") and isinstance(value, (int, float)):
        return f"{key}={value:.0f}s"
    return f"{key}={value:.4f}" if isinstance(value, float) else f"{key}={value}"


def warm_start(folder: Path | str, cfg) -> tuple:
    """``(network in train mode, lineage)`` of a model folder (or bundled model name) that a
    training with ``cfg`` (a ``TrainConfig``) may start from: the same members, network and
    preprocessing, else a ``ConfigError`` that says which differs."""
    from napari_lesionseg.core.bundled import resolve_model
    from napari_lesionseg.core.dataclass_io import ConfigError
    from napari_lesionseg.core.model_folder import load_model_folder

    init = load_model_folder(resolve_model(folder))
    n_init, n_cfg = init.config.network.members, cfg.model.network.members
    if n_init != n_cfg:
        raise ConfigError(f"--init {folder}: it averages {n_init} network(s) (model.network.members), the "
                          f"config {n_cfg}: add --set model.network.members={n_init} to train them together")
    for part in ("network", "preprocess"):
        if getattr(init.config, part) != getattr(cfg.model, part):
            raise ConfigError(f"--init {folder}: its model.{part} differs from the config's "
                              f"(a warm start needs the same {part})")
    return init.net.train(), {"parent": init.version, "parent_path": str(folder),
                              "parent_weights_sha256": init.config.weights_sha256}


def cmd_train(args: argparse.Namespace) -> int:
    from napari_lesionseg.core.dataclass_io import ConfigError

    from .run_folder import check_run_folder, saved_config
    from .train_config import load_config
    from .trainer import train_maybe_distributed

    overrides = list(args.set)
    if args.images:
        overrides.append(f"data.images={args.images}")
    if args.masks:
        overrides.append(f"data.masks={args.masks}")
    if args.minutes is not None:
        overrides.append(f"run.minutes={args.minutes}")
    if args.steps is not None:
        overrides.append(f"run.steps={args.steps}")
    if args.final:
        overrides.append("data.final=true")
    if args.config is None and not args.resume:
        raise ConfigError("--config is required (a preset or a TOML file) unless --resume continues a run")
    cfg = load_config(args.config, overrides,
                      start=saved_config(args.out) if args.config is None else None)
    check_run_folder(args.out, cfg, args.resume)
    init_net, lineage = warm_start(args.init, cfg) if args.init is not None else (None, None)
    best, in_sample = None, False
    for ev in train_maybe_distributed(cfg, args.out, resume=args.resume, init_from=init_net, lineage=lineage):
        if not args.quiet:
            _emit(ev, "text")
        if ev.get("event") == "data":  # a final model validates on its training photos by design
            in_sample = not cfg.data.final and bool(set(ev["val"]) & set(ev["train"]))
        if ev.get("event") == "done":
            best = ev["best"]
    if best:
        print(f"best model: {best}" + (" (chosen on photos it also trained on, too few to hold one out: its "
                                       "validation scores are optimistic)" if in_sample else ""))
    return 0


def _member_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected member indices such as 1 or 0,1") from None


def process_started(max_age: float = 120.0) -> float | None:
    """When this process started (``time.time()``), read from Linux's ``/proc``; None elsewhere
    or when it looks wrong (more than ``max_age`` seconds ago)."""
    import os
    import time

    try:
        with open("/proc/self/stat", encoding="ascii") as fh:
            ticks = int(fh.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime, after "(comm)"
        with open("/proc/uptime", encoding="ascii") as fh:
            age = float(fh.read().split()[0]) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None
    return time.time() - age if 0.0 <= age <= max_age else None


def budget_from_args(args: argparse.Namespace):
    """The fine-tune's ``Budget`` from ``finetune``'s options (with none given: ``Budget()``'s
    defaults, which is what the plugin's button runs)."""
    from .finetune import Budget

    return Budget(steps=args.steps, epochs=args.epochs, minutes=args.minutes, lr=args.lr,
                  freeze_encoder=args.freeze_encoder, train_only=args.train_only, members=args.members,
                  freeze_batchnorm=args.freeze_batchnorm, replay_share=args.replay_share,
                  calibration=args.calibration, hold_out=not args.no_hold_out, seed=args.seed,
                  keep_base_if_better=args.keep_base, guard_margin=args.guard_margin,
                  **({} if args.blend is None else {"blend": args.blend}),
                  **({} if args.max_steps is None else {"max_steps": args.max_steps}))


def cmd_finetune(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from napari_lesionseg.core.bundled import resolve_model
    from napari_lesionseg.core.errors import LesionsegInputError
    from napari_lesionseg.core.finetune_outcome import outcome, verdict
    from napari_lesionseg.core.pairs import pairs_of
    from napari_lesionseg.core.progress import run_to_end

    from .finetune import fine_tune

    budget = budget_from_args(args)  # an out-of-range option is refused before anything is read
    budget = replace(budget, started_at=process_started())  # the click's budget counts the process's start
    model, out_dir = args.model, args.out
    if args.project is not None:
        from napari_lesionseg.cli import existing_project, project_model
        from napari_lesionseg.core.registry import Registry
        from napari_lesionseg.core.store import Project

        project = Project(existing_project(args.project))
        pairs = project.corrected_pairs()
        reg = Registry(project.root)
        model = project_model(model, project.root)  # what the plugin's button fine-tunes
        out_dir = reg.new_version_path() if out_dir is None else out_dir
    else:
        if out_dir is None:
            raise LesionsegInputError(args.images, "--out (the new model folder) is required with --images")
        pairs = pairs_of(args.images, args.masks)
    seen: dict[str, dict] = {}  # the plan and the finish, each sent once, for the verdict

    def emit(ev: dict) -> None:
        seen[ev.get("event", "")] = ev
        _emit(ev, args.events)

    out = run_to_end(fine_tune(resolve_model(model), pairs, budget, out_dir), emit)
    if args.events == "text":
        done, plan = seen.get("finished", {}), seen.get("plan", {})
        kind = outcome(done)
        print(f"new model: {out}")
        print(verdict(done, plan, Path(out).name) + {
            "worse": ": keep using the old model, or use this one knowing that",
            "kept": ", so using it changes nothing; correct more photos and fine-tune again",
            "new": ""}[kind])
        if args.project is not None and Path(out).parent == reg.dir and kind != "kept":
            print(f"to use it in this project{' anyway' if kind == 'worse' else ''}: "
                  f"lesionseg models --project {project.root} --promote {Path(out).name}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from napari_lesionseg.cli import run_command

    parser = argparse.ArgumentParser(prog="python -m lesionseg_training")
    sub = parser.add_subparsers(dest="command", required=True)
    add_train_parser(sub)
    add_finetune_parser(sub)
    args = parser.parse_args(argv)
    return run_command(args.func, args)
