"""The training loop: ``train(config, run_dir)`` is a generator of events whose return value
is the best model folder. Readable top to bottom: set up, then ``train_one_step`` until the
step or time budget is spent, validating every ``eval_every`` steps."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Generator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_lesionseg.core.dataclass_io import to_dict
from napari_lesionseg.core.errors import TrainingDiverged
from napari_lesionseg.core.model_folder import save_model_folder
from napari_lesionseg.core.models import build_model
from napari_lesionseg.core.pairs import Pair
from napari_lesionseg.core.runtime import autocast, autocast_dtype, default_threads, pick_device

from .adversary import Adversary, edge_loss
from .calibrate import calibrate
from .dale import Dale
from .data import PatchSampler, Prepared, find_pairs, prepare_pair, split_pairs
from .distributed import DistContext, init_from_env, leave_process_group
from .events import EventLog
from .losses import supervised_loss
from .train_config import OptimConfig, TrainConfig
from .validate import validate

Event = dict[str, Any]
ENCODER_PREFIXES = ("encoder.", "down.", "e1.", "e2.", "e3.", "e4.")  # frozen by run.freeze_encoder
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
                   fuzzy: np.ndarray | None = None, idx: np.ndarray | None = None, step: int = 0) -> dict[str, float]:
    """One iteration (METHODS.md 6.3): discriminator first on the detached prediction, then
    the generator on supervised + SGDC edge + adversarial terms, then the dynamic gates."""
    dev = next(net.parameters()).device
    xt = torch.from_numpy(x).to(dev, non_blocking=True).contiguous(memory_format=torch.channels_last)
    yt = torch.from_numpy(y).to(dev, non_blocking=True)
    with autocast(dev, autocast_dtype("auto" if cfg.run.amp else "fp32", dev, training=True)):
        out = net(xt)
    p = torch.sigmoid(out.logits.float())
    logs: dict[str, float] = {}
    if adv is not None:
        logs["d_loss"] = adv.step_d(xt, yt, p.detach())
    if dale is not None and fuzzy is not None and idx is not None:
        total, sup_logs = dale.loss(out, yt, torch.from_numpy(fuzzy).to(dev), idx, step)
    else:
        total, sup_logs = supervised_loss(out.logits, yt, cfg.loss)
    logs.update(sup_logs)
    netcfg = cfg.model.network
    if out.edge_logits is not None:
        le = edge_loss(out.edge_logits, yt)
        total = total + netcfg.sgdc.edge_lambda * le
        logs["edge"] = float(le.detach())
    gate_grad = None
    if adv is not None:
        adv.freeze(True)
        l_adv = adv.g_loss(xt, yt, p)
        adv.freeze(False)
        if netcfg.dynamic.mode == "gates" and out.gates is not None:
            gate_grad = torch.autograd.grad(l_adv, out.gates, retain_graph=True)[0]
        total = total + cfg.adversary.weight * l_adv
        logs["adv"] = float(l_adv.detach())
    if not torch.isfinite(total):
        raise TrainingDiverged(f"loss became {float(total)}")
    opt.zero_grad(set_to_none=True)
    total.backward()
    opt.step()
    if gate_grad is not None:
        with torch.no_grad():  # a <- a - eta * clip(dL_adv/da): the gates follow the adversary only
            out.gates -= netcfg.dynamic.eta * gate_grad.clamp(-netcfg.dynamic.clip, netcfg.dynamic.clip)
            out.gates.grad = None
    if adv is not None and netcfg.dynamic.mode == "literal":
        literal_adaptation_step(net, adv, xt, yt, netcfg.dynamic.eta)
    return {"loss": float(total.detach()), **logs}


def literal_adaptation_step(net: nn.Module, adv: Adversary, xt: torch.Tensor, yt: torch.Tensor, eta: float) -> None:
    """DynSegNet's update taken literally: W <- W - eta * grad L_adv on the decoder residual
    blocks and attention gates (plain SGD, gradient norm clipped to 1)."""
    params = [p for n, p in net.named_parameters() if n.split(".")[0] in ("blocks", "gates")]
    p = torch.sigmoid(net(xt).logits.float())
    adv.freeze(True)
    l_adv = adv.g_loss(xt, yt, p)
    adv.freeze(False)
    grads = torch.autograd.grad(l_adv, params, allow_unused=True)
    pairs = [(prm, g) for prm, g in zip(params, grads) if g is not None]
    norm = torch.sqrt(sum((g.float() ** 2).sum() for _, g in pairs)) if pairs else torch.zeros(())
    scale = min(1.0, 1.0 / (float(norm) + 1e-12))
    with torch.no_grad():
        for prm, g in pairs:
            prm -= eta * scale * g


def prepare_items(pairs: list, cfg: TrainConfig) -> list[Prepared]:
    cache = Path(cfg.data.cache_dir) if cfg.data.cache_dir else None
    return [prepare_pair(p, cfg.model.preprocess, cache) for p in pairs]


def _save(folder: Path, net: nn.Module, cfg: TrainConfig, metrics: dict, lineage: dict,
          threshold: float | None = None) -> Path:
    model_cfg = cfg.model
    if threshold is not None:
        model_cfg = replace(model_cfg, inference=replace(model_cfg.inference, threshold=threshold))
    return save_model_folder(folder, net, model_cfg, metrics, lineage, overwrite=True)


def _extras(adv: Adversary | None, dale: Dale | None, sampler: PatchSampler) -> dict:
    """What a resumed run needs besides the network and its optimiser to continue exactly:
    the adversary and its optimiser, DALE's histories, omega and stable statistics, and the
    random streams (crops/augmentation, torch)."""
    return {"adversary": adv.state_dict() if adv is not None else None,
            "dale": dale.state_dict() if dale is not None else None,
            "rng": {"sampler": sampler.rng.bit_generator.state, "torch": torch.get_rng_state()}}


def _restore_extras(state: dict, adv: Adversary | None, dale: Dale | None, sampler: PatchSampler,
                    ctx: DistContext) -> None:
    if adv is not None and state.get("adversary") is not None:
        adv.load_state_dict(state["adversary"])
    if dale is not None and state.get("dale") is not None:
        dale.load_state_dict(state["dale"])
        if dale.state.passes:
            sampler.fuzzy = dale.state.fuzzy
    rng = state.get("rng")
    if rng is not None and ctx.rank == 0:  # other ranks reseed from (seed, step, rank)
        sampler.rng.bit_generator.state = rng["sampler"]
        torch.set_rng_state(rng["torch"])


def train(cfg: TrainConfig, run_dir: str | Path, *, resume: bool = False,
          init_from: nn.Module | None = None, lineage: dict | None = None,
          pairs: tuple[list[Pair], list[Pair]] | None = None,
          dist_ctx: DistContext | None = None) -> Generator[Event, None, Path]:
    """Train ``cfg.model`` on ``cfg.data``; write ``run_dir/{config.json, events.jsonl,
    metrics.csv, best/, last/, state.pt}``. Yields events; returns the best model folder."""
    ctx = dist_ctx or DistContext(device=pick_device(cfg.run.device))
    dev = ctx.device
    run = Path(run_dir)
    threads = cfg.run.threads or max(1, default_threads() // ctx.world)
    torch.set_num_threads(threads)
    torch.manual_seed(cfg.run.seed)
    log = EventLog(run)
    if ctx.is_main:
        run.mkdir(parents=True, exist_ok=True)
        (run / "config.json").write_text(json.dumps(to_dict(cfg), indent=2))

    train_pairs, val_pairs = pairs if pairs is not None else split_pairs(find_pairs(cfg.data), cfg.data)
    yield {"event": "data", "train": [p.id for p in train_pairs], "val": [p.id for p in val_pairs]}
    t0 = time.time()
    train_items = prepare_items(train_pairs, cfg)
    val_items = prepare_items(val_pairs, cfg)
    yield {"event": "prepared", "seconds": round(time.time() - t0, 1)}

    net = build_model(cfg.model.network) if init_from is None else init_from
    net = net.to(dev, memory_format=torch.channels_last).train()
    model: nn.Module = net
    if ctx.enabled:
        model = torch.nn.parallel.DistributedDataParallel(net, device_ids=[dev.index] if dev.type == "cuda" else None)
    frozen = ENCODER_PREFIXES if cfg.run.freeze_encoder else ()
    # dynamic-gate logits are updated by the adversarial gradient only, never by the optimiser
    params = [p for n, p in net.named_parameters() if not n.startswith(frozen) and not n.endswith(GATE_PARAM)]
    opt = make_optimizer(params, cfg.optim)
    adv = Adversary(cfg.adversary, cfg.model.network.in_channels, dev) if cfg.adversary.type != "none" else None
    start, best, elapsed0 = 0, -1.0, 0.0
    state_file = run / "state.pt"
    state = torch.load(state_file, weights_only=True, map_location="cpu") if resume and state_file.exists() else None
    if state is not None:
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optim"])
        start, best = int(state["step"]), float(state["best"])
        elapsed0 = float(state.get("elapsed", 0.0))
    sampler = PatchSampler(train_items, cfg.data, seed=cfg.run.seed * 100003 + start + 7919 * ctx.rank)
    stride = cfg.model.network.stride
    dale = Dale(cfg.paradigm.dale, cfg.loss, train_items, cfg.run.steps) if cfg.paradigm.type == "dale" else None
    if state is not None:
        _restore_extras(state, adv, dale, sampler, ctx)
        yield {"event": "resumed", "step": start}
    lineage = {"data": {p.id: None for p in train_pairs}, **(lineage or {})}
    deadline = None if cfg.run.minutes is None else time.time() + 60 * cfg.run.minutes - elapsed0
    t_start = time.time()
    step = start
    last_good = None
    while step < cfg.run.steps:
        progress = budget_progress(step, cfg.run.steps, time.time() - t_start + elapsed0, cfg.run.minutes)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, progress, cfg.optim)
        if dale is not None:
            dale.follow_budget(step, progress)
        if dale is not None and dale.wants_partition(step):
            frac = dale.partition(net, stride)
            sampler.fuzzy = dale.state.fuzzy
            if ctx.is_main:
                ev = {"event": "partition", "step": step, "fuzzy_fraction": frac}
                log.write(ev)
                yield ev
        x, y = sampler.batch()
        try:
            logs = train_one_step(model, opt, x, y, cfg, adv, dale, sampler.last_fuzzy, sampler.last_idx, step)
        except TrainingDiverged as err:
            msg = f"training stopped at step {step}: {err}; the last good model is kept"
            ev = {"event": "error", "step": step, "message": msg}
            if ctx.is_main:
                log.write(ev)
            yield ev
            if last_good is None:
                raise
            return last_good
        step += 1
        if ctx.is_main and (step % cfg.run.log_every == 0 or step == 1):
            ev = {"event": "step", "step": step, "lr": opt.param_groups[0]["lr"],
                  "elapsed": round(time.time() - t_start, 2), **logs}
            log.write(ev)
            yield ev
        out_of_time = ctx.any_flag(deadline is not None and time.time() > deadline)
        if ctx.is_main and (step % cfg.run.eval_every == 0 or step == cfg.run.steps or out_of_time):
            metrics = validate(net, val_items, stride, cfg.model.inference.threshold)
            ev = {"event": "eval", "step": step, "elapsed": round(time.time() - t_start, 1), **metrics}
            log.write(ev)
            yield ev
            meta = {"step": step, "val_images": [p.id for p in val_pairs], **metrics}
            last_good = _save(run / "last", net, cfg, meta, lineage, metrics["val_best_threshold"])
            score = metrics["val_aupr"] if math.isfinite(metrics["val_aupr"]) else metrics["val_dice"]
            if score > best:
                best = score
                _save(run / "best", net, cfg, meta, lineage, metrics["val_best_threshold"])
            torch.save({"model": net.state_dict(), "optim": opt.state_dict(), "step": step, "best": best,
                        "elapsed": time.time() - t_start + elapsed0, **_extras(adv, dale, sampler)},
                       run / ".state.tmp")
            (run / ".state.tmp").replace(state_file)
        if out_of_time:
            break
    if ctx.is_main and (run / "best").exists() and val_items:
        # fit the probability calibration on the validation images and store it in best/
        from napari_lesionseg.core.model_folder import load_model_folder

        best_model = load_model_folder(run / "best")
        calibrated, figures = calibrate(best_model.net, best_model.config, val_items)
        save_model_folder(run / "best", best_model.net, calibrated, {**best_model.metrics, "calibration": figures},
                          best_model.lineage, overwrite=True)
        ev = {"event": "calibrated", **figures}
        log.write(ev)
        yield ev
    in_sync = ctx.weights_identical(net)
    ctx.barrier()
    ev = {"event": "done", "step": step, "best": str(run / "best"), "best_score": best,
          "elapsed": round(time.time() - t_start, 1), "rank": ctx.rank, "world": ctx.world,
          "ranks_identical": in_sync}
    if ctx.is_main:
        log.write(ev)
    yield ev
    return run / "best"


def train_maybe_distributed(cfg: TrainConfig, run_dir: str | Path, *, resume: bool = False,
                            init_from: nn.Module | None = None, lineage: dict | None = None
                            ) -> Generator[Event, None, Path]:
    """:func:`train`, joining the process group first when started by ``torchrun``."""
    ctx = init_from_env(cfg.run.device)
    try:
        return (yield from train(cfg, run_dir, resume=resume, dist_ctx=ctx, init_from=init_from, lineage=lineage))
    finally:
        leave_process_group(ctx)
