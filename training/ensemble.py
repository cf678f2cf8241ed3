"""One model folder from several trained ones: the mean of their probabilities
(``network.members``; the product runs each member as a TTA view of its own).

    python -m lesionseg_training.ensemble --members napari_lesionseg/models/default \\
        napari_lesionseg/models/multi --outputs HE --name default-ensemble --out runs/ens

The members must share their network description but for their outputs, and their
preprocessing; each must have every output asked for (``--outputs``, by default the first
member's), and a member with more outputs gives only those (its output layer's rows for them).
The folder's probabilities are the members' raw mean: its calibration, threshold, fuzzy-map
error rate and review rates are not the members' and are left unfitted here (identity
calibration, the members' mean threshold); fit them out of fold with
:mod:`.oof_calibrate`, on fold ensembles made the same way from each fold's models. Its lineage
lists the members' (``members``) and the photos any of them trained on (``data``); its
``metrics.json`` names as held out only the photos none of them trained on.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_lesionseg.core.errors import LesionsegInputError
from napari_lesionseg.core.lesion_types import HE, OUTPUT_TYPES
from napari_lesionseg.core.model_config import ModelConfig
from napari_lesionseg.core.model_folder import LoadedModel, load_model_folder, save_model_folder
from napari_lesionseg.core.models import build_model
from napari_lesionseg.core.models.ensemble import MeanEnsemble, members

from .replay import copy_replay


def _description(cfg: ModelConfig) -> dict[str, Any]:
    """What members must share: the network but its outputs, and the preprocessing."""
    net = replace(cfg.network, outputs=[HE])
    return {"network": net, "preprocess": cfg.preprocess}


def _raw_threshold(models: list[LoadedModel], name: str) -> float:
    """The members' thresholds of output ``name`` on their raw (uncalibrated) scale, averaged: a
    starting threshold for their raw mean."""
    raw = []
    for m in models:
        thr, knots = m.config.inference.for_type(name)
        raw.append(float(np.interp(thr, knots[1], knots[0])) if knots else thr)
    return float(np.clip(np.mean(raw), 1e-4, 1 - 1e-4))


def member_state(model: LoadedModel, outputs: list[str]) -> dict[str, torch.Tensor]:
    """``model``'s weights for a network with ``outputs`` only: every tensor as it is, but those
    whose first dimension runs over the model's outputs, which keep the rows of ``outputs``."""
    have = list(model.config.network.outputs)
    missing = [t for t in outputs if t not in have]
    if missing:
        raise LesionsegInputError(Path(model.path or "?"), f"has no output {', '.join(missing)} (it has {have})")
    target = build_model(replace(model.config.network, outputs=list(outputs))).state_dict()
    state = model.net.state_dict()
    rows = torch.tensor([have.index(t) for t in outputs])
    out = {}
    for name, want in target.items():
        got = state[name]
        if got.shape != want.shape:
            if got.shape[1:] != want.shape[1:] or got.shape[0] != len(have):
                raise LesionsegInputError(Path(model.path or "?"), f"weight {name}: {tuple(got.shape)} cannot give "
                                                                   f"{tuple(want.shape)}")
            got = got.index_select(0, rows)
        out[name] = got.clone()
    return out


def compose(models: list[LoadedModel], outputs: list[str] | None = None, name: str = "ensemble",
            tta: str = "none", command: str = "lesionseg_training.ensemble.compose"
            ) -> tuple[MeanEnsemble, ModelConfig, dict[str, Any], dict[str, Any]]:
    """``(net, config, metrics, lineage)`` of the mean of ``models`` (``command``: how it was
    made, for the lineage)."""
    if len(models) < 2:
        raise LesionsegInputError(None, "an ensemble needs at least two members")
    first = models[0]
    for m in models:
        if m.config.network.members != 1:
            raise LesionsegInputError(Path(m.path or "?"), "is an ensemble already: give its members instead")
        if _description(m.config) != _description(first.config):
            raise LesionsegInputError(Path(m.path or "?"), f"has another network or preprocessing than {first.path}: "
                                                           "members must share them (but for their outputs)")
    outputs = list(outputs or first.config.network.outputs)
    if not outputs or outputs[0] != HE or not set(outputs) <= set(OUTPUT_TYPES):
        raise LesionsegInputError(None, f"outputs {outputs}: must start with HE and name types of {list(OUTPUT_TYPES)}")
    net_cfg = replace(first.config.network, outputs=outputs, members=len(models))
    net = build_model(net_cfg)
    assert isinstance(net, MeanEnsemble)
    for member, model in zip(members(net), models):
        member.load_state_dict(member_state(model, outputs))
    net.eval()
    inf = first.config.inference
    types = [replace(t, calibration=None, threshold=_raw_threshold(models, t.name))
             for t in inf.types if t.name in outputs]
    inference = replace(inf, tta=tta, calibration=None, threshold=_raw_threshold(models, HE), types=types)
    config = replace(first.config, name=name, network=net_cfg, inference=inference, weights_sha256=None,
                     config_sha256=None)
    trained: dict[str, Any] = {}
    for m in models:
        trained.update(m.lineage.get("data", {}))
    unseen = set.intersection(*(set(m.unseen_photos) for m in models)) - set(trained)
    metrics: dict[str, Any] = {"calibration": {"fitted_on": "none: the members' raw mean; fit it out of fold "
                                                            "(python -m lesionseg_training.oof_calibrate)"}}
    if unseen:
        if any(isinstance(m.metrics.get("held_out"), dict) for m in models):
            metrics["held_out"] = {"photos": sorted(unseen)}
        else:
            metrics["val_images"] = sorted(unseen)
    lineage = {"kind": "ensemble", "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "command": command,
               "members": [{"name": m.version, "path": str(m.path), "weights_sha256": m.config.weights_sha256,
                            "lineage": m.lineage} for m in models],
               "data": trained}
    credit = next((m.lineage["dataset_credit"] for m in models if "dataset_credit" in m.lineage), None)
    if credit:
        lineage["dataset_credit"] = credit
    return net, config, metrics, lineage


def main(argv: list[str] | None = None) -> int:
    from napari_lesionseg.cli import run_command

    ap = argparse.ArgumentParser(prog="python -m lesionseg_training.ensemble", description=__doc__.split("\n\n")[0])
    ap.add_argument("--members", type=Path, nargs="+", required=True, help="two or more model folders")
    ap.add_argument("--outputs", default=None, help="comma-separated, e.g. HE (default: the first member's)")
    ap.add_argument("--tta", choices=["none", "hflip", "flips"], default="none",
                    help="flips each member sees (default none: the members are the views)")
    ap.add_argument("--name", default="ensemble")
    ap.add_argument("--out", type=Path, required=True, help="the new model folder (must not exist)")
    args = ap.parse_args(argv)
    if len(args.members) < 2:
        ap.error("--members needs at least two model folders")
    args.command = " ".join(["python -m lesionseg_training.ensemble", *(argv if argv is not None else sys.argv[1:])])
    return run_command(_compose_folder, args)


def _compose_folder(args: argparse.Namespace) -> int:
    if args.out.exists():
        raise LesionsegInputError(args.out, "already exists; choose a new folder (nothing was written)")
    models = [load_model_folder(p) for p in args.members]
    outputs = [t.strip() for t in args.outputs.split(",")] if args.outputs else None
    net, config, metrics, lineage = compose(models, outputs, args.name, args.tta, args.command)
    first = Path(args.members[0])
    save_model_folder(args.out, net, config, metrics, lineage,
                      fill_more=(lambda tmp: copy_replay(first, tmp)) if (first / "replay").is_dir() else None)
    print(f"{len(models)} members, outputs {config.network.outputs}, TTA {args.tta} -> {args.out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
