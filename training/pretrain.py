"""Self-supervised pretraining on photos nobody annotated: masked in-painting (issue 13's lever
for the 499 unlabelled IDRiD photos; context encoders, Pathak et al. 2016; Models Genesis, Zhou
et al. 2021, for U-Nets trained from scratch on medical images).

The network is the recipe's own (``cfg.model.network``, a ``unet_small``) with a 1x1 reconstruction head on its
last features that predicts the input's channels. Each step draws crops of the unlabelled
photos as the training sampler draws them (anywhere in the disc; flipped, turned, jittered),
blanks random square blocks to 0 (the disc's mean: every channel is standardised inside the
disc) until ``mask_share`` of the crop is blank, and the loss is the mean squared error of the
reconstruction on the blank pixels inside the disc. Only blank pixels count: through its skip
connections a U-Net could copy every visible pixel. No label enters.

The result is a model folder whose segmentation head is as a new network's (it takes no part
in the in-painting loss; the reconstruction head is dropped), so ``lesionseg train --init FOLDER`` (or
``compare_presets.py --init``) starts a recipe from it. ``--resume`` continues a run from its
last saved state (every ``state_every`` steps).

Run: ``python -m lesionseg_training.pretrain --unlabelled ../shared/data/idrid_unlabeled/images
--not-like ../shared/data/idrid/train/images --out RUN --steps N [--config default --set K=V]``.
Photos that are one of ``--not-like``'s photographs are left out, so a cross-validation fold's
photos never take part.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_lesionseg.core.atomic import atomic_open
from napari_lesionseg.core.errors import LesionsegInputError
from napari_lesionseg.core.jsonfile import json_text
from napari_lesionseg.core.model_folder import save_model_folder
from napari_lesionseg.core.models.factory import build_model
from napari_lesionseg.core.runtime import autocast, autocast_dtype, default_threads

from .consistency import prepare_unlabelled
from .data import PatchSampler
from .train_config import TrainConfig, load_config
from .trainer import lr_at

STATE = "pretrain_state.pt"
MODEL = "pretrained"  # the model folder inside the run folder


def blank_blocks(shape: tuple[int, int, int], share: float, lo: int, hi: int,
                 rng: np.random.Generator) -> np.ndarray:
    """``bool (B, s, s)``: per crop, random squares of side ``lo..hi`` px, added until at
    least ``share`` of the crop is covered."""
    b, h, w = shape
    out = np.zeros(shape, bool)
    for i in range(b):
        while out[i].mean() < share:
            side = int(rng.integers(lo, hi + 1))
            y, x = int(rng.integers(0, max(1, h - side + 1))), int(rng.integers(0, max(1, w - side + 1)))
            out[i, y:y + side, x:x + side] = True
    return out


def inpainting_loss(recon: torch.Tensor, x: torch.Tensor, blank: torch.Tensor) -> torch.Tensor:
    """Mean squared error of ``recon`` against ``x`` (B, C, s, s) over the blank pixels inside
    the disc (a pixel is inside when any channel of ``x`` is not 0)."""
    where = (blank & (x != 0).any(1)).unsqueeze(1).float()
    n = where.sum() * x.shape[1]
    return ((recon.float() - x) ** 2 * where).sum() / n.clamp_min(1.0)


class Inpainter(nn.Module):
    """The recipe's network and a 1x1 head from its last features to the input's channels."""

    def __init__(self, net: nn.Module, features: int, channels: int) -> None:
        super().__init__()
        self.net = net
        self.recon = nn.Conv2d(features, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.recon(self.net(x).features)


def pretrain(cfg: TrainConfig, unlabelled: Path, out: Path, *, not_like: Path | None = None,
             mask_share: float = 0.35, block: tuple[int, int] = (8, 40), state_every: int = 200,
             resume: bool = False, limit: int = 0) -> Iterator[dict[str, Any]]:
    """Pretrain ``cfg``'s network for ``cfg.run.steps`` steps (module text); yields progress
    events and ends with ``{"event": "done", "model": <folder>}``."""
    out = Path(out)
    if cfg.model.network.arch != "unet_small":
        raise LesionsegInputError(None, f"model.network.arch {cfg.model.network.arch!r}: in-painting pretraining "
                                        "is built for 'unet_small' (its last features are widths[0] channels wide)")
    if (out / MODEL).exists():
        raise FileExistsError(f"{out / MODEL}: this run has finished already; choose a new --out")
    if not resume and (out / STATE).exists():
        raise FileExistsError(f"{out}: a pretraining run is there; --resume continues it")
    torch.manual_seed(cfg.run.seed)
    torch.set_num_threads(cfg.run.threads or default_threads())
    dev = torch.device("cpu")
    amp = autocast_dtype("auto" if cfg.run.amp else "fp32", dev, training=True)
    pre = cfg.model.preprocess
    cache = Path(cfg.data.cache_dir) if cfg.data.cache_dir else None
    items, left_out = prepare_unlabelled(Path(unlabelled), pre, cache, not_like=not_like, limit=limit)
    if not items:
        raise LesionsegInputError(unlabelled, "no photos to pretrain on"
                                  + (f" ({len(left_out)} left out as copies of {not_like}'s)" if left_out else ""))
    out.mkdir(parents=True, exist_ok=True)  # only once there is something to pretrain on
    yield {"event": "photos", "photos": len(items), "left_out": len(left_out)}
    data = replace(cfg.data, lesion_crop_fraction=0.0, cameras=replace(cfg.data.cameras, share=0.0))
    sampler = PatchSampler(items, data, seed=cfg.run.seed)
    rng = np.random.default_rng(cfg.run.seed + 1)
    netcfg = cfg.model.network
    model = Inpainter(build_model(netcfg), netcfg.widths[0], netcfg.in_channels)
    model = model.to(dev, memory_format=torch.channels_last).train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr)
    step, losses = 0, []
    task = {"mask_share": mask_share, "block_px": list(block), "photos": len(items), "seed": cfg.run.seed}
    if resume and (out / STATE).exists():
        st = torch.load(out / STATE, weights_only=False)
        if st["task"] != task:  # checked before any state is loaded: the message names what differs
            raise LesionsegInputError(out / STATE, f"a run of {st['task']}, not of {task}: resume it with its own "
                                                   "settings")
        try:
            model.load_state_dict(st["model"])
        except RuntimeError as e:  # another network (widths, channels): not torch's size list
            raise LesionsegInputError(out / STATE, f"its network is not model.network {netcfg}: "
                                                   "resume it with its own settings") from e
        opt.load_state_dict(st["opt"])
        sampler.rng.bit_generator.state = st["sampler"]
        rng.bit_generator.state = st["rng"]
        step, losses = st["step"], st["losses"]
    steps = cfg.run.steps
    t0, step0 = time.time(), step
    while step < steps:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, step / steps, cfg.optim)
        x, _ = sampler.batch()
        blank = blank_blocks((x.shape[0], x.shape[2], x.shape[3]), mask_share, *block, rng)
        xt = torch.from_numpy(x)
        bt = torch.from_numpy(blank)
        xin = (xt * (~bt).unsqueeze(1)).contiguous(memory_format=torch.channels_last)
        with autocast(dev, amp):
            recon = model(xin)
        loss = inpainting_loss(recon, xt, bt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        losses.append(float(loss.detach()))
        if (state_every and step % state_every == 0) or step == steps:
            with atomic_open(out / STATE) as fh:
                torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "losses": losses, "task": task,
                            "sampler": sampler.rng.bit_generator.state, "rng": rng.bit_generator.state}, fh)
        if step % cfg.run.log_every == 0 or step == steps:
            yield {"event": "step", "step": step, "steps": steps, "loss": float(np.mean(losses[-cfg.run.log_every:])),
                   "s_per_step": round((time.time() - t0) / (step - step0), 3)}
    net = model.net  # its segmentation head took no part in the loss: it is as initialised
    lineage = {"pretrained": {"method": "masked in-painting", "photos": len(items), "steps": steps,
                              "mask_share": mask_share, "block_px": list(block), "unlabelled": str(unlabelled),
                              "left_out": sorted(left_out),
                              "loss_first_last_100": [float(np.mean(losses[:100])), float(np.mean(losses[-100:]))]}}
    folder = save_model_folder(out / MODEL, net.eval(), cfg.model, metrics={}, lineage=lineage)
    (out / "losses.json").write_text(json_text(losses), encoding="utf-8")
    yield {"event": "done", "model": str(folder), "step": step,
           "loss_first_last_100": lineage["pretrained"]["loss_first_last_100"]}


def main(argv: list[str] | None = None) -> int:
    from napari_lesionseg.cli import run_command

    p = argparse.ArgumentParser(prog="python -m lesionseg_training.pretrain", description=__doc__.split("\n\n")[0])
    p.add_argument("--unlabelled", type=Path, required=True, help="a folder of photos without masks")
    p.add_argument("--not-like", type=Path, default=None, help="leave out photos that are one of this folder's")
    p.add_argument("--out", type=Path, required=True, help="run folder (the model ends in OUT/pretrained)")
    p.add_argument("--config", default="default", help="the recipe whose network and preprocessing to pretrain")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--mask-share", type=float, default=0.35)
    p.add_argument("--limit", type=int, default=0, help="at most this many photos (0: all)")
    p.add_argument("--resume", action="store_true")
    args = p.parse_args(argv)
    if not 0.0 < args.mask_share < 1.0:
        p.error("--mask-share must lie between 0 and 1")
    return run_command(_pretrain, args)


def _pretrain(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, [*args.set, f"run.steps={args.steps}"])
    for ev in pretrain(cfg, args.unlabelled, args.out, not_like=args.not_like, mask_share=args.mask_share,
                       resume=args.resume, limit=args.limit):
        if ev["event"] == "step":
            rate = ev["s_per_step"]
            print(f"step {ev['step']}/{ev['steps']}  loss {ev['loss']:.4f}  {rate:.2f} s/step, "
                  f"{math.ceil(rate * (ev['steps'] - ev['step']) / 60)} min left", flush=True)
        else:
            print(json.dumps(ev), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
