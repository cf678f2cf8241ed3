"""Mean-teacher consistency on photos nobody annotated (issue 13's lever for the 499 unlabelled
IDRiD photos; Tarvainen and Valpola 2017, as used for segmentation by Perone and Cohen-Adad
2018 and Yu et al. 2019).

The teacher is an exponential moving average of the student's weights and BatchNorm statistics
(``loss.consistency_decay`` per step). Each step draws ``loss.consistency_batch`` crops of the
unlabelled photos (``data.unlabelled``; anywhere in the fundus, augmented as training crops
are); the teacher predicts them as drawn, the student predicts them once more turned by a
random element of the square's symmetry group (a quarter turn and a mirror) and with fresh
brightness, contrast and noise, in the same forward pass as the labelled crops. The student's
probabilities, turned back, are pulled towards the teacher's by their mean squared difference,
weighted by ``loss.consistency_weight`` times ``exp(-5 (1 - t)^2)`` while the budget's progress
``t`` is below ``loss.consistency_rampup`` (then the full weight). No label enters; the saved
model is the student (what averaging the weights does by itself is the ``default_ema`` lever).

Photos that are the same photograph as an annotated one (IDRiD's grading set repeats some
segmentation photos at another size) are left out (``data.unlabelled_not_like``), so a
cross-validation fold's photos never come back as unlabelled training photos.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from napari_lesionseg.core import preprocess
from napari_lesionseg.core.image_io import read_image
from napari_lesionseg.core.model_config import PreprocessConfig
from napari_lesionseg.core.preprocess import prepare

from .data import PatchSampler, Prepared, save_cached
from .train_config import TrainConfig


def prepare_unlabelled(folder: Path, pre: PreprocessConfig, cache_dir: Path | None = None, *,
                       not_like: Path | None = None, limit: int = 0,
                       progress: Callable[[int, int], None] | None = None) -> tuple[list[Prepared], dict[str, str]]:
    """The photos of ``folder`` on the working grid (``Prepared`` with every label 255: nothing
    known), cached as ``.npz`` in ``cache_dir``; those that are one of ``not_like``'s photographs
    left out. Returns the items and ``{left-out stem: the annotated photo it is}``."""
    from .pseudo_labels import list_photos, same_photographs  # thumbnails: only when asked

    photos = list_photos(folder)
    left_out = same_photographs(photos, list_photos(not_like)) if not_like is not None else {}
    photos = [p for p in photos if p.stem not in left_out]
    if limit > 0:
        photos = photos[:limit]
    items = []
    for n, path in enumerate(photos, 1):
        items.append(_prepared(path, pre, cache_dir))
        if progress is not None:
            progress(n, len(photos))
    return items, left_out


def _prepared(path: Path, pre: PreprocessConfig, cache_dir: Path | None) -> Prepared:
    st = path.stat()
    key = hashlib.sha256(json.dumps([str(path.resolve()), st.st_size, st.st_mtime_ns, asdict(pre),
                                     preprocess.INPUT_VERSION]).encode())
    cf = cache_dir / f"unlabelled-{path.stem}-{key.hexdigest()[:16]}.npz" if cache_dir is not None else None
    if cf is not None and cf.exists():
        z = np.load(cf)
        x, fov = z["x"], z["fov"]
    else:
        rgb, _ = read_image(path)
        x32, _, fov = prepare(rgb, pre.fov_diameter, pre.green_contrast_sigma)
        x = x32.astype(np.float16)
        if cf is not None:
            save_cached(cf, x=x, fov=fov)
    return Prepared(f"unlabelled:{path.stem}", x, np.full(fov.shape, 255, np.uint8), fov)


def rampup(progress: float, length: float) -> float:
    """``exp(-5 (1 - t / length)^2)`` below ``length``, 1 after (the usual sigmoid-shaped ramp)."""
    if progress >= length:
        return 1.0
    return math.exp(-5.0 * (1.0 - max(0.0, progress) / length) ** 2)


def turn(t: torch.Tensor, k: int, mirror: bool) -> torch.Tensor:
    """``t`` (B, C, H, W) turned by ``k`` quarter turns, then mirrored left-right if ``mirror``."""
    t = torch.rot90(t, k, dims=(2, 3))
    return t.flip(3) if mirror else t


def turn_back(t: torch.Tensor, k: int, mirror: bool) -> torch.Tensor:
    """The inverse of :func:`turn`."""
    if mirror:
        t = t.flip(3)
    return torch.rot90(t, -k, dims=(2, 3))


class Consistency:
    """The teacher, the unlabelled crops and the student's perturbation (module text)."""

    def __init__(self, cfg: TrainConfig, items: list[Prepared], net: nn.Module, seed: int) -> None:
        if not items:
            raise ValueError("data.unlabelled: no photos to train the consistency on")
        self.cfg = cfg.loss
        self.jitter = cfg.data.augment
        data = replace(cfg.data, batch_size=cfg.loss.consistency_batch, lesion_crop_fraction=0.0,
                       cameras=replace(cfg.data.cameras, share=0.0))
        self.sampler = PatchSampler(items, data, seed=seed)
        self.rng = np.random.default_rng(seed + 1)
        self.teacher = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(cfg.loss.consistency_decay),
                                     use_buffers=True)
        self.teacher.eval()

    def inputs(self, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor, tuple[int, bool]]:
        """``(teacher's input, student's input, the turn)`` for this step's unlabelled crops."""
        x, _ = self.sampler.batch()
        xt = torch.from_numpy(x).to(dev)
        k, mirror = int(self.rng.integers(4)), bool(self.rng.random() < 0.5)
        b = xt.shape[0]
        a = self.jitter
        gain = torch.from_numpy(1.0 + self.rng.uniform(-a.contrast, a.contrast, (b, 1, 1, 1)).astype(np.float32))
        shift = torch.from_numpy(self.rng.uniform(-a.brightness, a.brightness, (b, 1, 1, 1)).astype(np.float32))
        noise = torch.from_numpy(self.rng.normal(0.0, a.gaussian_noise_sigma, x.shape).astype(np.float32))
        xs = turn(xt * gain.to(dev) + shift.to(dev) + noise.to(dev), k, mirror)
        return xt, xs.contiguous(memory_format=torch.channels_last), (k, mirror)

    @torch.no_grad()
    def targets(self, xt: torch.Tensor, amp: torch.dtype | None) -> torch.Tensor:
        """The teacher's probabilities for the crops as drawn (float32)."""
        from napari_lesionseg.core.runtime import autocast

        with autocast(xt.device, amp):
            return torch.sigmoid(self.teacher.module(xt.contiguous(memory_format=torch.channels_last)).logits.float())

    def loss(self, student_logits: torch.Tensor, target: torch.Tensor, how: tuple[int, bool],
             progress: float) -> tuple[torch.Tensor, float]:
        """``(weighted loss, weight)``: the mean squared difference between the student's
        probabilities, turned back, and the teacher's."""
        w = self.cfg.consistency_weight * rampup(progress, self.cfg.consistency_rampup)
        p = turn_back(torch.sigmoid(student_logits.float()), *how)
        return w * torch.mean((p - target) ** 2), w

    def update(self, net: nn.Module) -> None:
        """The teacher follows the student after its step."""
        self.teacher.update_parameters(net)

    def state_dict(self) -> dict:
        return {"teacher": self.teacher.state_dict(), "sampler": self.sampler.rng.bit_generator.state,
                "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.teacher.load_state_dict(state["teacher"])
        self.sampler.rng.bit_generator.state = state["sampler"]
        self.rng.bit_generator.state = state["rng"]


def prepared_summary(folder: Path, items: list[Prepared], left_out: dict[str, str]) -> dict:
    """What a model's lineage records of its unlabelled photos."""
    return {"folder": str(folder), "photos": [it.id.removeprefix("unlabelled:") for it in items],
            "left_out": {k: f"the same photograph as annotated {v}" for k, v in left_out.items()}}
