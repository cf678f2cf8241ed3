"""The training loop: ``train(config, run_dir)`` is a generator of events whose return value
is the best model folder. Readable top to bottom: set up, then ``train_one_step`` until the
step or time budget is spent, validating every ``eval_every`` steps."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Generator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from napari_lesionseg.core.dataclass_io import to_dict
from napari_lesionseg.core.errors import LesionsegInputError, TrainingDiverged
from napari_lesionseg.core.lesion_types import HE
from napari_lesionseg.core.model_folder import save_model_folder
from napari_lesionseg.core.models import build_model
from napari_lesionseg.core.pairs import Pair, marks_a_lesion, require_known_types
from napari_lesionseg.core.runtime import autocast, autocast_dtype, default_threads, pick_device

from .adapt import freeze_batchnorm, trainable
from .adversary import Adversary, edge_loss
from .calibrate import calibrate
from .consistency import Consistency, prepare_unlabelled, prepared_summary
from .dale import Dale
from .data import (
    PatchSampler,
    Prepared,
    camera_views,
    find_pairs,
    held_out_pairs,
    pair_digests,
    prepare_pair,
    split_pairs,
    validation_with_lesions,
)
from .distributed import DistContext, average_, init_from_env, leave_process_group
from .events import EventLog
from .fit_review import fit_review
from .hard_negatives import FalseAlarms
from .losses import error_head_loss, multi_output_loss, supervised_loss
from .replay import pick_replay, write_replay
from .train_config import OptimConfig, TrainConfig
from .validate import validate

Event = dict[str, Any]
GATE_PARAM = "dyn.logits"


def lr_at(step: int, progress: float, cfg: OptimConfig) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine decay to ``min_lr_frac * lr`` as the
    budget's ``progress`` (0..1, steps or time, whichever is further along) runs out."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "none":
        return cfg.lr
    t = min(1.0, max(0.0, progress))
    return cfg.lr * (cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * t)))


def budget_progress(step: int, steps: int, elapsed: float, minutes: float | None) -> float:
    """Fraction of the budget used: steps done, or wall time spent, whichever is larger."""
    p = step / steps
    if minutes:
        p = max(p, elapsed / (60.0 * minutes))
    return min(1.0, p)


def make_optimizer(params: list[nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    if cfg.type == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    if cfg.type == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    return torch.optim.RMSprop(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def train_one_step(net: nn.Module, opt: torch.optim.Optimizer, x: np.ndarray, y: np.ndarray,
                   cfg: TrainConfig, adv: Adversary | None = None, dale: Dale | None = None,
                   fuzzy: np.ndarray | None = None, idx: np.ndarray | None = None, step: int = 0,
                   where: np.ndarray | None = None, consistency: Consistency | None = None,
                   progress: float = 0.0, false_alarms: FalseAlarms | None = None,
                   soft: np.ndarray | None = None) -> dict[str, float]:
    """One iteration (METHODS.md 6.3): discriminator first on the detached prediction, then
    the generator on supervised + SGDC edge + adversarial terms, then the dynamic adaptation
    (gates, or the literal step on the decoder) from the same forward pass. ``net`` may be
    wrapped in DDP; gradients DDP does not see are averaged over the ranks here. With
    ``consistency``, the student's unlabelled crops ride in the same forward pass (one batch,
    as DDP wants one forward per backward) and the teacher follows after the step. With
    ``false_alarms`` (``data.hard_negatives``), the crops' false alarms are remembered on their
    photos (``idx``, ``where``) for later crops. ``soft (B, s, s)``: the crops' targets in [0, 1]
    (``data.pseudo_soft``: a teacher's probabilities), ``y`` then only saying what is ignored."""
    raw = getattr(net, "module", net)
    dev = next(net.parameters()).device
    xt = torch.from_numpy(x).to(dev, non_blocking=True).contiguous(memory_format=torch.channels_last)
    yt = torch.from_numpy(y).to(dev, non_blocking=True)
    amp = autocast_dtype("auto" if cfg.run.amp else "fp32", dev, training=True)
    if consistency is not None:
        x_teacher, x_student, turned = consistency.inputs(dev)
        target = consistency.targets(x_teacher, amp)
        with autocast(dev, amp):
            both = net(torch.cat([xt, x_student]))
        out = replace(both, logits=both.logits[:len(xt)])  # the config allows no other head with it
    else:
        with autocast(dev, amp):
            out = net(xt)
    p = torch.sigmoid(out.logits.float())
    logs: dict[str, float] = {}
    if false_alarms is not None and idx is not None and where is not None:
        logs["false_alarms"] = float(false_alarms.observe(p, yt, idx, where))
    if adv is not None:
        logs["d_loss"] = adv.step_d(xt, yt, p.detach())
    if dale is not None and fuzzy is not None and idx is not None:
        dale.observe(out.logits, yt, idx, where, step)  # online AE/ER: this step's own predictions
        with autocast(dev, amp):  # the EMA teacher's forward, when the step needs it
            total, sup_logs = dale.loss(out, yt, torch.from_numpy(fuzzy).to(dev), idx, step, x=xt)
    elif yt.ndim == 4:  # several outputs (network.outputs)
        total, sup_logs = multi_output_loss(out.logits, yt, cfg.loss, cfg.model.network.outputs)
    elif soft is None:
        total, sup_logs = supervised_loss(out.logits, yt, cfg.loss)
    else:  # data.pseudo_soft: every crop's target in [0, 1], yt only says what is ignored
        total, sup_logs = supervised_loss(out.logits, yt, cfg.loss,
                                          soft_target=torch.from_numpy(soft).to(dev, non_blocking=True))
    logs.update(sup_logs)
    if consistency is not None:
        lc, w = consistency.loss(both.logits[len(xt):], target, turned, progress)
        total = total + lc
        logs["consistency"] = float(lc.detach()) / w if w > 0 else 0.0
        logs["consistency_weight"] = w
    netcfg = cfg.model.network
    if out.error_logits is not None:
        he_target = yt[:, 0] if yt.ndim == 4 else yt
        lf, _ = error_head_loss(out.error_logits, out.logits[:, 0], he_target, cfg.loss.error_head_threshold)
        total = total + cfg.loss.error_head_weight * lf
        logs["error_head"] = float(lf.detach())
    if out.edge_logits is not None:
        le = edge_loss(out.edge_logits, yt)
        total = total + netcfg.sgdc.edge_lambda * le
        logs["edge"] = float(le.detach())
    gate_grad: torch.Tensor | None = None
    literal: list[tuple[nn.Parameter, torch.Tensor]] = []
    if adv is not None:
        adv.freeze(True)
        l_adv = adv.g_loss(xt, yt, p)
        adv.freeze(False)
        if netcfg.dynamic.mode == "gates" and out.gates is not None:
            gate_grad = torch.autograd.grad(l_adv, out.gates, retain_graph=True)[0]
        elif netcfg.dynamic.mode == "literal":
            params = literal_params(raw)
            grads = torch.autograd.grad(l_adv, params, retain_graph=True, allow_unused=True)
            literal = [(prm, g) for prm, g in zip(params, grads) if g is not None]
        total = total + cfg.adversary.weight * l_adv
        logs["adv"] = float(l_adv.detach())
    if not torch.isfinite(total):
        raise TrainingDiverged(f"loss became {float(total)}")
    opt.zero_grad(set_to_none=True)
    total.backward()
    opt.step()
    if gate_grad is not None:
        average_([gate_grad])
        with torch.no_grad():  # a <- a - eta * clip(dL_adv/da): the gates follow the adversary only
            out.gates -= netcfg.dynamic.eta * gate_grad.clamp(-netcfg.dynamic.clip, netcfg.dynamic.clip)
            out.gates.grad = None
    if literal:
        logs["literal_norm"] = literal_adaptation_step(literal, netcfg.dynamic.eta)
    if dale is not None:
        dale.after_step(raw)
    if consistency is not None:
        consistency.update(raw)
    return {"loss": float(total.detach()), **logs}


LITERAL_PREFIXES = ("blocks", "gates")  # DynSegNet's decoder residual blocks and attention gates


def literal_params(net: nn.Module) -> list[nn.Parameter]:
    """The parameters DynSegNet's literal adaptation updates (of the unwrapped network)."""
    return [p for n, p in net.named_parameters() if n.split(".")[0] in LITERAL_PREFIXES and p.requires_grad]


def literal_adaptation_step(pairs: list[tuple[nn.Parameter, torch.Tensor]], eta: float) -> float:
    """DynSegNet's update taken literally: ``W <- W - eta * grad L_adv`` on the decoder residual
    blocks and attention gates (plain SGD, gradient norm clipped to 1), with the gradient of
    this step's forward pass, averaged over the ranks. Returns the gradient norm."""
    grads = [g.detach().float().clone() for _, g in pairs]
    average_(grads)
    norm = float(torch.sqrt(sum((g ** 2).sum() for g in grads))) if grads else 0.0
    scale = min(1.0, 1.0 / (norm + 1e-12))
    with torch.no_grad():
        for (prm, _), g in zip(pairs, grads):
            prm -= (eta * scale * g).to(prm.dtype)
    return norm


def prepare_items(pairs: list, cfg: TrainConfig, cameras: bool = False) -> list[Prepared]:
    """The pairs on the working grid; with ``cameras`` (the training photos) also through the
    simulated cameras of ``data.cameras`` when its share is above 0."""
    cache = Path(cfg.data.cache_dir) if cfg.data.cache_dir else None
    items = [prepare_pair(p, cfg.model.preprocess, cache, cfg.model.network.outputs) for p in pairs]
    if cameras and cfg.data.cameras.share > 0:
        items = [replace(it, views=camera_views(p, cfg.model.preprocess, cfg.data.cameras, cache))
                 for p, it in zip(pairs, items)]
    return items


def _save(folder: Path, net: nn.Module, cfg: TrainConfig, metrics: dict, lineage: dict,
          threshold: float | None = None) -> Path:
    model_cfg = cfg.model
    if threshold is not None and 0.0 < threshold < 1.0:  # 0: "everything is lesion" fitted best (a
        # correction marking the whole photo): no threshold, the config's stays (as for the other outputs)
        model_cfg = replace(model_cfg, inference=replace(model_cfg.inference, threshold=threshold))
    inference = model_cfg.inference
    for name in model_cfg.network.outputs[1:]:  # the other outputs' validation thresholds
        thr = metrics.get(f"val_best_threshold_{name}")
        if thr is not None and 0.0 < thr < 1.0:
            inference = inference.with_type(name, float(thr), inference.for_type(name)[1])
    model_cfg = replace(model_cfg, inference=inference)
    return save_model_folder(folder, net, model_cfg, metrics, lineage, overwrite=True)


def _extras(adv: Adversary | None, dale: Dale | None, sampler: PatchSampler,
            consistency: Consistency | None = None) -> dict:
    """What a resumed run needs besides the network and its optimiser to continue exactly:
    the adversary and its optimiser, DALE's histories, omega and stable statistics, the
    mean teacher and its crops' streams, and the random streams (crops/augmentation, torch)."""
    return {"adversary": adv.state_dict() if adv is not None else None,
            "dale": dale.state_dict() if dale is not None else None,
            "consistency": consistency.state_dict() if consistency is not None else None,
            "false_alarms": sampler.false_alarms.state_dict() if sampler.false_alarms is not None else None,
            "rng": {"sampler": sampler.rng.bit_generator.state, "torch": torch.get_rng_state()}}


def _restore_extras(state: dict, adv: Adversary | None, dale: Dale | None, sampler: PatchSampler,
                    ctx: DistContext, consistency: Consistency | None = None) -> None:
    if consistency is not None and state.get("consistency") is not None:
        consistency.load_state_dict(state["consistency"])
    if adv is not None and state.get("adversary") is not None:
        adv.load_state_dict(state["adversary"])
    if dale is not None and state.get("dale") is not None:
        dale.load_state_dict(state["dale"])
        if dale.state.passes:
            sampler.fuzzy = dale.state.fuzzy
    if sampler.false_alarms is not None and state.get("false_alarms") is not None:
        sampler.false_alarms.load_state_dict(state["false_alarms"])
    rng = state.get("rng")
    if rng is not None and ctx.rank == 0:  # other ranks reseed from (seed, step, rank)
        sampler.rng.bit_generator.state = rng["sampler"]
        torch.set_rng_state(rng["torch"])


@dataclass
class _Run:
    """Everything one training run holds between steps."""

    cfg: TrainConfig
    ctx: DistContext
    dir: Path
    log: EventLog
    net: nn.Module
    model: nn.Module  # ``net``, or ``net`` wrapped in DDP
    opt: torch.optim.Optimizer
    adv: Adversary | None
    dale: Dale | None
    sampler: PatchSampler
    val_items: list[Prepared]
    val_ids: list[str]
    lineage: dict
    step: int = 0
    best: float = -1.0
    elapsed0: float = 0.0  # seconds spent before a resume
    t_start: float = field(default_factory=lambda: time.time())  # looked up when made: a test may set the clock
    step0: int = 0  # the step this sitting started from (a resumed run's)
    last_good: Path | None = None
    train_pairs: list[Pair] = field(default_factory=list)
    ema: AveragedModel | None = None  # optim.ema > 0: the averaged weights, validated and saved
    held_out: list[str] = field(default_factory=list)  # a final model's annotated photos kept out of everything
    # a fine-tune's forgetting guard: fixed crops of the base's replay photos; a checkpoint whose
    # AUPR on them (any output) fell more than guard_margin below the starting weights' is never best
    guard_items: list[Prepared] = field(default_factory=list)
    guard_margin: float = 0.0
    guard_base: dict[str, float] | None = None
    consistency: Consistency | None = None  # loss.consistency_weight > 0: the mean teacher

    @property
    def saved_net(self) -> nn.Module:
        """The network that is validated and saved: the weight average when there is one."""
        return self.ema.module if self.ema is not None else self.net

    @property
    def elapsed(self) -> float:
        return time.time() - self.t_start + self.elapsed0

    def budget_used(self) -> float:
        """``budget_progress`` now, on one clock for every rank (``DistContext.agreed``): the
        learning rate, DALE's phase and the consistency ramp follow it."""
        minutes = self.cfg.run.minutes
        elapsed = self.ctx.agreed(self.elapsed) if minutes else self.elapsed
        return budget_progress(self.step, self.cfg.run.steps, elapsed, minutes)

    def seconds_left(self) -> float | None:
        """The budget's remaining wall time, from this sitting's pace (validations included):
        the steps left at the seconds a step has taken so far, or the time budget's rest when
        that comes first; None before a few steps have set the pace."""
        done = self.step - self.step0
        if done < 5 or self.step >= self.cfg.run.steps:
            return None
        left = (self.cfg.run.steps - self.step) * (time.time() - self.t_start) / done
        if self.cfg.run.minutes is not None:
            left = min(left, 60.0 * self.cfg.run.minutes - self.elapsed)
        return max(0.0, left)

    def out_of_time(self) -> bool:
        minutes = self.cfg.run.minutes
        return self.ctx.any_flag(minutes is not None and self.elapsed > 60 * minutes)

    def emit(self, ev: Event, *, every_rank: bool = False) -> Generator[Event, None, None]:
        """Log and yield an event (rank 0 only, unless ``every_rank``)."""
        if self.ctx.is_main:
            self.log.write(ev)
        if self.ctx.is_main or every_rank:
            yield ev


def train(cfg: TrainConfig, run_dir: str | Path, *, resume: bool = False,
          init_from: nn.Module | None = None, lineage: dict | None = None,
          pairs: tuple[list[Pair], list[Pair]] | None = None,
          dist_ctx: DistContext | None = None,
          replay: tuple[list[Prepared], float] | None = None,
          guard: tuple[list[Prepared], float] | None = None) -> Generator[Event, None, Path]:
    """Train ``cfg.model`` on ``cfg.data``; write ``run_dir/{config.json, events.jsonl,
    metrics.csv, best/, last/, state.pt}``. Yields events; returns the best model folder.
    ``replay = (items, share)``: prepared photos drawn for that share of the crops besides
    the training pairs (a fine-tune's guard against forgetting). ``guard = (items, margin)``
    (with ``run.validate_start``): a checkpoint whose AUPR on ``items`` fell more than ``margin``
    below the starting weights' is not taken as best (a fine-tune's forgetting check)."""
    r = yield from _start(cfg, Path(run_dir), resume, init_from, lineage, pairs,
                          dist_ctx or DistContext(device=pick_device(cfg.run.device)), replay)
    if guard is not None:
        if not cfg.run.validate_start:
            raise ValueError("a forgetting guard needs run.validate_start (the starting weights' scores)")
        r.guard_items, r.guard_margin = list(guard[0]), float(guard[1])
    if cfg.run.validate_start and r.step == 0 and r.ctx.is_main:
        yield from _validate_and_save(r)  # the starting weights compete with the run's checkpoints
    while r.step < cfg.run.steps:
        progress = r.budget_used()
        yield from _follow_schedule(r, progress)
        try:
            logs = train_one_step(r.model, r.opt, *r.sampler.batch(), cfg, r.adv, r.dale, r.sampler.last_fuzzy,
                                  r.sampler.last_idx, r.step, r.sampler.last_where, r.consistency, progress,
                                  r.sampler.false_alarms, soft=r.sampler.last_soft)
        except TrainingDiverged as err:
            yield from r.emit({"event": "error", "step": r.step, "message": f"training stopped at step {r.step}: "
                               f"{err}; the last good model is kept"}, every_rank=True)
            if r.last_good is None:
                raise
            return r.last_good
        r.step += 1
        if r.ema is not None:
            r.ema.update_parameters(r.net)
        if r.step % cfg.run.log_every == 0 or r.step == 1:
            left = r.seconds_left()
            yield from r.emit({"event": "step", "step": r.step, "lr": r.opt.param_groups[0]["lr"],
                               "elapsed": round(r.elapsed, 2), **({} if left is None else {"left": round(left)}),
                               **logs})
        out_of_time = r.out_of_time()
        if r.ctx.is_main and (r.step % cfg.run.eval_every == 0 or r.step == cfg.run.steps or out_of_time):
            yield from _validate_and_save(r)
        elif r.ctx.is_main and cfg.run.state_every and r.step % cfg.run.state_every == 0:
            _save_state(r)  # between validations: an interrupted run loses at most state_every steps
        if out_of_time:
            break
    yield from _calibrate_best(r)
    in_sync = r.ctx.weights_identical(r.net) and (r.adv is None or r.ctx.weights_identical(r.adv.net))
    r.ctx.barrier()
    yield from r.emit({"event": "done", "step": r.step, "best": str(r.dir / "best"), "best_score": r.best,
                       "elapsed": round(r.elapsed, 1), "rank": r.ctx.rank, "world": r.ctx.world,
                       "ranks_identical": in_sync}, every_rank=True)
    return r.dir / "best"


def _start(cfg: TrainConfig, run: Path, resume: bool, init_from: nn.Module | None, lineage: dict | None,
           pairs: tuple[list[Pair], list[Pair]] | None, ctx: DistContext,
           replay: tuple[list[Prepared], float] | None = None) -> Generator[Event, None, _Run]:
    """Threads, seed, run folder, data, network, optimiser, adversary, DALE; a resume's state."""
    dev = ctx.device
    torch.set_num_threads(cfg.run.threads or max(1, default_threads() // ctx.world))
    torch.manual_seed(cfg.run.seed)
    if pairs is None:  # a project's corrections reviewed for other types only teach this network nothing
        found = find_pairs(cfg.data)
        require_known_types(found, cfg.model.network.outputs, Path(str(cfg.data.images)), "nothing to train on",
                            "train a network with those outputs (model.network.outputs)")
        if not any(marks_a_lesion(p, cfg.model.network.outputs) for p in found):  # stops at the first that does
            raise LesionsegInputError(
                Path(str(cfg.data.masks or cfg.data.images)),
                f"none of the {len(found)} masks marks a lesion of a type this network learns "
                f"({', '.join(cfg.model.network.outputs)}): trained on them it would learn to find nothing (and "
                "score that perfect on their empty validation masks); add photos with lesions")
    if pairs is not None:
        train_pairs, val_pairs = pairs
    else:
        train_pairs, val_pairs = split_pairs(found, cfg.data)
        if cfg.data.val_ids is None and not cfg.data.final:  # the photos asked for validate, as they are
            train_pairs, val_pairs = validation_with_lesions(train_pairs, val_pairs, cfg.model.network.outputs)
    if ctx.is_main:
        run.mkdir(parents=True, exist_ok=True)
        (run / "config.json").write_text(json.dumps(to_dict(cfg), indent=2))
    yield {"event": "data", "train": [p.id for p in train_pairs], "val": [p.id for p in val_pairs]}
    t0 = time.time()
    train_items = prepare_items(train_pairs, cfg, cameras=True)
    val_items = prepare_items(val_pairs, cfg)
    yield {"event": "prepared", "seconds": round(time.time() - t0, 1)}

    net = build_model(cfg.model.network) if init_from is None else init_from
    net = net.to(dev, memory_format=torch.channels_last).train()
    if cfg.run.freeze_batchnorm:
        freeze_batchnorm(net)
    # before DDP wraps the network: it registers the parameters that require gradients
    train_only = "decoder" if cfg.run.freeze_encoder else cfg.run.train_only
    changed = trainable(net, train_only, cfg.model.network.arch, cfg.run.train_members)
    for n, p in net.named_parameters():
        if n.endswith(GATE_PARAM):
            p.requires_grad_(True)  # the dynamic gates learn from the adversarial gradient whatever is frozen
    model: nn.Module = net
    if ctx.enabled:
        model = torch.nn.parallel.DistributedDataParallel(net, device_ids=[dev.index] if dev.type == "cuda" else None)
    # dynamic-gate logits are updated by the adversarial gradient only, never by the optimiser
    params = [p for n, p in net.named_parameters() if n in changed and not n.endswith(GATE_PARAM)]
    opt = make_optimizer(params, cfg.optim)
    adv = Adversary(cfg.adversary, cfg.model.network.in_channels, dev) if cfg.adversary.type != "none" else None
    state_file = run / "state.pt"
    state = torch.load(state_file, weights_only=True, map_location="cpu") if resume and state_file.exists() else None
    start = 0
    if state is not None:
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optim"])
        start = int(state["step"])
    if cfg.data.pseudo_labels is not None:
        from .pseudo_labels import load_pseudo_labels, pseudo_label_summary  # here: `python -m` runs that module

        if replay is not None:
            raise ValueError("data.pseudo_labels cannot be combined with a fine-tune's replay photos")
        if cfg.data.pseudo_soft and len(cfg.model.network.outputs) > 1:
            raise ValueError("data.pseudo_soft is for a hemorrhage-only network (the teacher's probabilities are "
                             f"its hemorrhages'); this one has outputs {cfg.model.network.outputs}")
        replay = (load_pseudo_labels(Path(cfg.data.pseudo_labels), cfg.model.preprocess, soft=cfg.data.pseudo_soft),
                  cfg.data.pseudo_share)
        lineage = {**(lineage or {}), "pseudo_labels": {**pseudo_label_summary(Path(cfg.data.pseudo_labels)),
                                                        "target": "soft" if cfg.data.pseudo_soft else "hard"}}
        yield {"event": "pseudo_labels", "photos": len(replay[0]), "share": cfg.data.pseudo_share}
    if replay is not None and cfg.paradigm.type == "dale":
        raise ValueError("replay and pseudo-labels are not supported with DALE (its statistics index the "
                         "training images only)")
    sampler = PatchSampler(train_items, cfg.data, seed=cfg.run.seed * 100003 + start + 7919 * ctx.rank,
                           replay=replay[0] if replay else None, replay_share=replay[1] if replay else 0.0,
                           outputs=cfg.model.network.outputs)
    dale = (Dale(cfg.paradigm.dale, cfg.loss, train_items, cfg.run.steps, min_warmup_steps=cfg.optim.warmup_steps)
            if cfg.paradigm.type == "dale" else None)
    if dale is not None:
        dale.attach(net)
    consistency = None
    if cfg.loss.consistency_weight > 0:
        folder = Path(cfg.data.unlabelled)  # required with the weight (train_config)
        t0 = time.time()
        unl, left_out = prepare_unlabelled(folder, cfg.model.preprocess,
                                           Path(cfg.data.cache_dir) if cfg.data.cache_dir else None,
                                           not_like=Path(cfg.data.unlabelled_not_like) if cfg.data.unlabelled_not_like
                                           else None, limit=cfg.data.unlabelled_limit)
        consistency = Consistency(cfg, unl, net, seed=cfg.run.seed * 100003 + start + 7919 * ctx.rank + 17)
        lineage = {**(lineage or {}), "unlabelled": prepared_summary(folder, unl, left_out)}
        yield {"event": "unlabelled", "photos": len(unl), "left_out": len(left_out),
               "seconds": round(time.time() - t0, 1)}
    r = _Run(cfg, ctx, run, EventLog(run), net, model, opt, adv, dale, sampler, val_items,
             [p.id for p in val_pairs], _lineage(train_pairs, lineage, ctx, cfg), step=start, step0=start,
             train_pairs=list(train_pairs), ema=_weight_average(net, cfg.optim.ema),
             held_out=[p.id for p in held_out_pairs(cfg.data)] if cfg.data.final and pairs is None else [],
             consistency=consistency)
    if state is not None and r.ema is not None and state.get("ema") is not None:
        r.ema.load_state_dict(state["ema"])
    if state is not None:
        r.best, r.elapsed0 = float(state["best"]), float(state.get("elapsed", 0.0))
        _restore_extras(state, adv, dale, sampler, ctx, consistency)
        yield {"event": "resumed", "step": start}
    return r


def _lineage(train_pairs: list[Pair], given: dict | None, ctx: DistContext, cfg: TrainConfig) -> dict:
    """What the saved folders record of the run's origin: the caller's lineage, with each
    training photo's and mask's sha256 under ``data`` unless the caller gave them (hashed on
    the main rank only: the others save nothing), and under ``recipe`` how it trained (the
    run's configuration but the model's, which ``config.json`` holds) unless the caller gave it."""
    given = given or {}
    data = given.get("data") or (pair_digests(train_pairs) if ctx.is_main else {})
    recipe = given.get("recipe") or {k: v for k, v in to_dict(cfg).items() if k != "model"}
    return {**given, "data": data, "recipe": recipe}


def _weight_average(net: nn.Module, decay: float) -> AveragedModel | None:
    """An exponential moving average of ``net``'s weights and BatchNorm buffers (its first
    update copies them), or None when ``decay`` is 0."""
    if decay <= 0:
        return None
    return AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def _follow_schedule(r: _Run, progress: float) -> Generator[Event, None, None]:
    """The learning rate and DALE's phase for this step (``progress``: ``_Run.budget_used``);
    DALE's partition passes when due."""
    for g in r.opt.param_groups:
        g["lr"] = lr_at(r.step, progress, r.cfg.optim)
    if r.dale is None:
        return
    r.dale.follow_budget(r.step, progress)
    if r.dale.wants_partition(r.step):
        frac = r.dale.partition(r.net, r.cfg.model.network.stride)
        r.sampler.fuzzy = r.dale.state.fuzzy
        yield from r.emit({"event": "partition", "step": r.step, "fuzzy_fraction": frac})


def _validate_and_save(r: _Run) -> Generator[Event, None, None]:
    """Validate; write ``last/``, ``best/`` when the score improved, and the resume state."""
    metrics = validate(r.saved_net, r.val_items, r.cfg.model.network.stride, r.cfg.model.inference.threshold,
                       r.cfg.model.network.outputs)
    kept = _guard_check(r)
    yield from r.emit({"event": "eval", "step": r.step, "elapsed": round(r.elapsed, 1), **metrics, **kept})
    meta = {"step": r.step, "val_images": r.val_ids, **metrics}
    if r.cfg.data.final:
        meta["val_in_sample"] = True  # a final model: the validation photos are training photos
        if r.held_out:  # what is still unseen (LoadedModel.unseen_photos): the excluded annotated photos
            meta["held_out"] = {"photos": r.held_out, "why": "data.exclude_ids: annotated photos this model "
                                                              "neither trained nor was calibrated on"}
    r.last_good = _save(r.dir / "last", r.saved_net, r.cfg, meta, r.lineage, metrics["val_best_threshold"])
    score = checkpoint_score(metrics)
    # no score at all (validation photos with nothing to find in their field of view): the first
    # checkpoint is kept (a fine-tune's: the starting weights) rather than none, which failed the run
    unscored = not math.isfinite(score) and not (r.dir / "best").exists()
    if (score > r.best and kept.get("guard_ok", True)) or unscored or r.cfg.data.final:  # a final model keeps the last
        r.best = score if math.isfinite(score) else r.best
        _save(r.dir / "best", r.saved_net, r.cfg, meta, r.lineage, metrics["val_best_threshold"])
    if r.cfg.run.snapshots:  # the weights being trained, as they stand at this step
        _save(r.dir / "snapshots" / f"step_{r.step}", r.net, r.cfg, {"step": r.step, "snapshot": True}, r.lineage,
              metrics["val_best_threshold"])
    _save_state(r)


def checkpoint_score(metrics: dict[str, float]) -> float:
    """What chooses the best checkpoint: the validation photos' hemorrhage AUPR, else their
    hemorrhage Dice; when none of them speaks for hemorrhages (a fine-tune on corrections
    reviewed for microaneurysms only, say) the mean AUPR of the outputs they do speak for."""
    for key in ("val_aupr", "val_dice"):
        if math.isfinite(metrics.get(key, float("nan"))):
            return metrics[key]
    others = [v for k, v in metrics.items() if k.startswith("val_aupr_") and math.isfinite(v)]
    return float(np.mean(others)) if others else float("nan")


def _guard_check(r: _Run) -> dict[str, Any]:
    """The forgetting guard's figures for the weights being validated: AUPR per output on the
    guard crops, the largest fall below the starting weights' and whether it is within the
    margin (nothing without a guard)."""
    if not r.guard_items:
        return {}
    m = validate(r.saved_net, r.guard_items, r.cfg.model.network.stride, r.cfg.model.inference.threshold,
                 r.cfg.model.network.outputs)
    got = {k.removeprefix("val_aupr").lstrip("_") or HE: v for k, v in m.items()
           if k.startswith("val_aupr") and math.isfinite(v)}
    if r.guard_base is None:  # the starting weights: the reference, always eligible
        r.guard_base = got
        return {"guard_aupr": got.get(HE, float("nan")), "guard_drop": 0.0, "guard_ok": True}
    drop = max((r.guard_base[t] - v for t, v in got.items() if t in r.guard_base), default=0.0)
    return {"guard_aupr": got.get(HE, float("nan")), "guard_drop": round(drop, 4),
            "guard_ok": drop <= r.guard_margin}


def _save_state(r: _Run) -> None:
    """Write what ``--resume`` continues from (weights, optimiser, step, best score, clock, EMA,
    adversary, DALE, sampler RNG) to ``state.pt``, atomically: a kill mid-write keeps the old one."""
    torch.save({"model": r.net.state_dict(), "optim": r.opt.state_dict(), "step": r.step, "best": r.best,
                "elapsed": r.elapsed, "ema": r.ema.state_dict() if r.ema is not None else None,
                **_extras(r.adv, r.dale, r.sampler, r.consistency)}, r.dir / ".state.tmp")
    (r.dir / ".state.tmp").replace(r.dir / "state.pt")


MIN_REVIEW_FIT_IMAGES = 10  # fewer training photos keep the review rates the config already has
REPLAY_PHOTOS = 8  # a trained model keeps this many of its training photos for fine-tunes to replay


def _calibrate_best(r: _Run) -> Generator[Event, None, None]:
    """Fit the probability calibration on the validation images and store it in ``best/``;
    then the fuzzy map's error rate and the review rates on the training images
    (training/fit_review.py), when there are at least ``MIN_REVIEW_FIT_IMAGES`` of them (a
    fine-tuning on a few corrections keeps its parent's)."""
    if not (r.ctx.is_main and (r.dir / "best").exists() and r.val_items):
        return
    from napari_lesionseg.core.model_folder import load_model_folder

    best_model = load_model_folder(r.dir / "best")
    calibrated, figures = calibrate(best_model.net, best_model.config, r.val_items)
    metrics = {**best_model.metrics, "calibration": figures}
    train_items = r.sampler.items
    if len(train_items) >= MIN_REVIEW_FIT_IMAGES:
        calibrated, fit = fit_review(best_model.net, calibrated, train_items)
        metrics["review_fit"] = fit
        yield from r.emit({"event": "review_fitted", **fit})
    save_model_folder(r.dir / "best", best_model.net, calibrated, metrics, best_model.lineage, overwrite=True)
    yield from r.emit({"event": "calibrated", **figures})
    if len(train_items) >= MIN_REVIEW_FIT_IMAGES:
        keep = pick_replay([p for p, it in zip(r.train_pairs, train_items) if (it.y == 1).any()], REPLAY_PHOTOS)
        if keep:
            write_replay(r.dir / "best", keep, r.cfg.model.preprocess, r.cfg.model.network.outputs)
            yield from r.emit({"event": "replay_written", "photos": [p.id for p in keep]})


def train_maybe_distributed(cfg: TrainConfig, run_dir: str | Path, *, resume: bool = False,
                            init_from: nn.Module | None = None, lineage: dict | None = None
                            ) -> Generator[Event, None, Path]:
    """:func:`train`, joining the process group first when started by ``torchrun``."""
    ctx = init_from_env(cfg.run.device)
    finished = False
    try:
        best = yield from train(cfg, run_dir, resume=resume, dist_ctx=ctx, init_from=init_from, lineage=lineage)
        finished = True
        return best
    finally:
        leave_process_group(ctx, finished)
