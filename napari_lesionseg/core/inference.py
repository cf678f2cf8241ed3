"""Tiled inference as a generator: yields :class:`Progress` per tile, returns :class:`Prediction`.

The photo is brought to the model's working grid (disc crop, rescale), cut into overlapping
tiles blended with a Gaussian window, each tile run under optional flip TTA, then mapped back
to the input's full size. Consumers: the CLI (terminal bar), the plugin (``thread_worker``:
cancelling stops at the next yield), tests (iterate directly; ``run_to_end`` helps).
"""

from __future__ import annotations

import itertools
import math
import time
import weakref
from collections.abc import Generator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

from . import disc_locator
from .anatomy import NO_OD_OUTPUT, Anatomy, disc_region, locate_region
from .errors import LesionsegInputError
from .fov import (
    FieldOfView,
    blank_problem,
    dark_doubt,
    detect_fov,
    fundus_doubts,
    size_doubt,
    too_small_problem,
)
from .fuzzy import binary_entropy, fuzzy_map
from .lesion_types import OD
from .lesions import Lesion, labelled_mask, lesion_table
from .model_config import InferenceConfig, ReviewConfig
from .model_folder import LoadedModel
from .models.ensemble import members
from .models.fuse import fold_batchnorm, fuse_conv_relu, fuse_decoder_joins
from .models.network_config import NetworkConfig
from .preprocess import Geometry, from_work, prepare, prepare_with_work
from .progress import relay, run_to_end  # noqa: F401 - run_to_end re-exported for callers of inference
from .runtime import autocast, autocast_dtype, cpu_pool, default_threads, row_blocks

T = TypeVar("T")


@dataclass(frozen=True)
class Progress:
    """``done`` of ``total`` units of ``stage`` finished."""

    stage: str
    done: int
    total: int


@dataclass
class Prediction:
    """Full-size results for one image (``H x W`` of the input).

    ``probability`` float32 in [0, 1] (0 outside the disc); ``mask`` uint8 0/1 after threshold
    and minimum area; ``fuzzy`` float32 in [0, 1], the map ``inference.fuzzy.map`` names
    (core/fuzzy.py); ``labels`` int32 lesion ids matching
    ``lesions``.
    """

    probability: NDArray[np.float32]
    mask: NDArray[np.uint8]
    fuzzy: NDArray[np.float32]
    labels: NDArray[np.int32]
    lesions: list[Lesion]
    geometry: Geometry
    model_version: str
    threshold: float
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # e.g. an out-of-memory fallback that happened
    precision: str = "fp32"  # what the network computed in: fp32, bf16 or fp16
    review: ReviewConfig = field(default_factory=ReviewConfig)  # the model's, for the review queue
    others: dict[str, TypeMaps] = field(default_factory=dict)  # the other outputs asked for, by type
    anatomy: Anatomy = field(default_factory=Anatomy)  # disc and fovea (from an OD output)
    tta: str = "none"  # the views the network ran (core/tta.py)
    grids: tuple[int, ...] = ()  # the working grids (px across the disc), the model's own first

    def all_lesions(self) -> list[Lesion]:
        """Hemorrhages, then every other lesion type's lesions (the optic disc is no lesion)."""
        return self.lesions + [les for name, maps in self.others.items() for les in maps.lesions]


@dataclass
class TypeMaps:
    """One output other than HE at full size: calibrated ``probability``, ``mask`` 0/1 after
    its own threshold, and its lesions (none for the optic disc)."""

    probability: NDArray[np.float32]
    mask: NDArray[np.uint8]
    threshold: float
    lesions: list[Lesion] = field(default_factory=list)


def tile_starts(length: int, tile: int, overlap: float) -> list[int]:
    """Start offsets covering ``[0, length)`` with tiles of ``tile`` px overlapping by ``overlap``."""
    if length <= tile:
        return [0]
    step = max(1, int(tile * (1.0 - overlap)))
    n = math.ceil((length - tile) / step) + 1
    return [min(i * step, length - tile) for i in range(n)]


def gaussian_window(h: int, w: int, sigma_frac: float = 0.125) -> NDArray[np.float32]:
    """Separable Gaussian weights peaking at the tile centre (floor 1e-3 so edges still count)."""
    def g(n: int) -> NDArray[np.float64]:
        x = np.arange(n) - (n - 1) / 2.0
        return np.exp(-0.5 * (x / max(sigma_frac * n, 1e-6)) ** 2)

    win = np.outer(g(h), g(w))
    return np.maximum(win / win.max(), 1e-3).astype(np.float32)


def n_channels(network: NetworkConfig) -> int:
    """How many maps the tiles accumulate: the outputs, and the fuzzy head's (last) if any."""
    return len(network.outputs) + int(network.error_head)


def _views(tta: str) -> list[tuple[int, ...]]:
    return {"none": [()], "hflip": [(), (3,)], "flips": [(), (3,), (2,), (2, 3)]}[tta]


def n_views(net: torch.nn.Module, tta: str) -> int:
    """Network passes per tile: the TTA's flips times the ensemble's members."""
    return len(members(net)) * len(_views(tta))


def _run_view(net: torch.nn.Module, t: torch.Tensor, d: tuple[int, ...], h: int, w: int,
              dtype: torch.dtype | None, fmt: torch.memory_format = torch.channels_last) -> torch.Tensor:
    """Probabilities ``(T, h, w)`` of one flip view of the padded tile ``t (1, C, H, W)``: one
    per output, then the fuzzy head's where the network has one (:func:`n_channels`).

    Autocast and inference mode are set here because both are thread-local (views may run in
    worker threads)."""
    v = (t.flip(d) if d else t).contiguous(memory_format=fmt)
    cast = autocast(t.device, dtype)
    with torch.inference_mode(), cast:
        out = net(v)
        err = getattr(out, "error_logits", None)
        logits = (out.logits if err is None else torch.cat([out.logits, err], 1)).float()
    return torch.sigmoid(logits.flip(d) if d else logits)[0, :, :h, :w]


_VIEW_POOL: ThreadPoolExecutor | None = None


def _view_pool() -> ThreadPoolExecutor:
    """Two worker threads, each running its views on half the cores (one each on 2 cores;
    ``torch.set_num_threads`` in a thread sets that thread's own OpenMP team, the caller's
    stays as it was)."""
    global _VIEW_POOL
    if _VIEW_POOL is None:
        per_worker = max(1, default_threads() // 2)
        _VIEW_POOL = ThreadPoolExecutor(2, thread_name_prefix="lesionseg-view",
                                        initializer=lambda: torch.set_num_threads(per_worker))
    return _VIEW_POOL


def views_in_parallel(device: torch.device, dtype: torch.dtype | None, n_views: int) -> bool:
    """Run TTA views two at a time, one core each, instead of one at a time on all cores?

    Only bf16 on a CPU with two or more cores does it: there two at a time was faster (the
    layers between the convolutions scale poorly across threads), in fp32 slower (twice the
    activation bytes: memory-bound); figures in benchmarks/README.md. Peak memory is that of
    two views instead of one."""
    return device.type == "cpu" and dtype == torch.bfloat16 and n_views > 1 and default_threads() >= 2


def _run_tile(net: torch.nn.Module, x: torch.Tensor, stride: int, tta: str, device: torch.device,
              dtype: torch.dtype | None = None, speedups: bool = True
              ) -> Generator[int, None, tuple[torch.Tensor, torch.Tensor | None]]:
    """Mean probabilities ``(T, h, w)`` and the hemorrhage output's view disagreement
    (max - min) for one tile ``(C, h, w)``; yields how many TTA views just finished (progress
    within a tile: a whole photo is often one). An ensemble's members are views too: every
    member sees every flip, and the mean is over all of them.

    The TTA views run one after another (peak memory of a single view), or two at a time on
    a bf16 CPU (see :func:`views_in_parallel`); the reduction is in view order either way."""
    c, h, w = x.shape
    ph, pw = (-h) % stride, (-w) % stride
    t = F.pad(x[None], (0, pw, 0, ph)).to(device)
    views = [(m, d) for m in members(net) for d in _views(tta)]
    probs: list[torch.Tensor] = []
    if speedups and views_in_parallel(device, dtype, len(views)):
        for i in range(0, len(views), 2):
            probs += list(_view_pool().map(lambda md: _run_view(md[0], t, md[1], h, w, dtype), views[i:i + 2]))
            yield len(views[i:i + 2])
    else:
        fmt = torch.channels_last if speedups else torch.contiguous_format
        for m, d in views:
            probs.append(_run_view(m, t, d, h, w, dtype, fmt))
            yield 1
    total, lo, hi = probs[0], probs[0][0], probs[0][0]
    for p in probs[1:]:
        total = total + p
        lo = torch.minimum(lo, p[0])
        hi = torch.maximum(hi, p[0])
    mean = (total / len(views)).cpu()
    dis = (hi - lo).cpu() if len(views) > 1 else None
    return mean, dis


def apply_calibration(prob: NDArray[np.float32], knots: list[list[float]] | None) -> NDArray[np.float32]:
    """Monotone piecewise-linear remapping of probabilities (identity without knots); 2-D maps
    are done in row blocks on all cores (``np.interp`` releases the GIL)."""
    if not knots:
        return prob
    kx, ky = np.asarray(knots[0]), np.asarray(knots[1])
    if prob.ndim != 2:
        return np.interp(prob, kx, ky).astype(np.float32)
    out = np.empty(prob.shape, np.float32)

    def part(rows: slice) -> None:
        out[rows] = np.interp(prob[rows], kx, ky)

    list(cpu_pool().map(part, row_blocks(prob.shape[0], default_threads())))
    return out


def calibrated_output(acc: torch.Tensor, wacc: torch.Tensor, k: int, disc: NDArray[np.bool_],
                      knots: list[list[float]] | None) -> NDArray[np.float32]:
    """Output ``k``'s calibrated probability on the working grid from the blended tiles' sums
    (:func:`_blend_tiles`), 0 outside the fundus ``disc``."""
    return apply_calibration(((acc[k] / wacc).numpy() * disc).astype(np.float32), knots) * disc


def predict(model: LoadedModel, rgb: NDArray[np.uint8], *, device: torch.device | str | None = None,
            tta: str | None = None, threshold: float | None = None, mm_per_px: float | None = None,
            fov: FieldOfView | None = None, precision: str = "auto",
            speedups: bool = True, types: list[str] | None = None,
            locate_disc: bool = True) -> Generator[Progress, None, Prediction]:
    """Segment one RGB ``uint8 (H, W, 3)`` photo. Yields Progress; returns Prediction.

    Hemorrhages always; ``types``: which of the model's other outputs to bring to full size
    (None: all; ``Prediction.others``). The optic disc and fovea (``Prediction.anatomy``) come
    from the model's disc output, or for a model without one, when ``locate_disc``, from the
    bundled ``multi`` model's (core/disc_locator.py).

    ``precision``: ``auto`` computes the network in bfloat16 on a CPU with native bf16 and in
    bfloat16 or float16 on CUDA (fp32 elsewhere); ``fp32`` or ``bf16`` force one (see runtime.autocast_dtype).
    """
    cfg: InferenceConfig = model.config.inference
    pre = model.config.preprocess
    dev = torch.device(device) if device is not None else next(model.net.parameters()).device
    tta = tta or cfg.tta
    thr = cfg.threshold if threshold is None else threshold
    if problem := blank_problem(rgb):
        raise LesionsegInputError(None, problem)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    fov = fov or detect_fov(rgb)
    if problem := too_small_problem(fov):
        raise LesionsegInputError(None, problem)
    x, geom, disc, work = prepare_with_work(rgb, pre.fov_diameter, pre.green_contrast_sigma, fov)
    extra = [prepare(rgb, g, pre.green_contrast_sigma, fov)[0] for g in cfg.extra_grids]
    # doubts about the photo; out-of-memory retries below add theirs
    notes = [d for d in (fundus_doubts(rgb, fov), dark_doubt(rgb, fov), size_doubt(fov, pre.fov_diameter)) if d]
    timings["preprocess"] = time.perf_counter() - t0
    h, w = geom.work_shape
    ts = cfg.tile_size
    t1 = time.perf_counter()
    xt = torch.from_numpy(x)
    stride = model.config.network.stride
    while True:
        net = _place(model.net, dev) if speedups else model.net.to(dev).eval()
        dtype = autocast_dtype(precision if speedups else "fp32", dev)
        try:
            acc, dacc, wacc = yield from _blend_grids(net, xt, extra, ts, cfg.tile_overlap, stride, tta, dev, dtype,
                                                      speedups, n_channels(model.config.network))
            break
        except (Exception, MemoryError) as err:  # noqa: BLE001 - only out-of-memory is handled, the rest re-raised
            if not is_out_of_memory(err):
                raise
            if dev.type == "cuda":
                torch.cuda.empty_cache()
            if ts // 2 >= MIN_TILE:
                ts //= 2
                notes.append(f"{dev.type} ran out of memory: retrying with {ts}-px tiles")
            elif dev.type != "cpu":
                notes.append(f"{dev.type} ran out of memory even with {ts}-px tiles: finished on the CPU")
                dev = torch.device("cpu")
            else:
                raise LesionsegInputError(model.path, f"not enough memory to run this model even with {ts}-px "
                                                      "tiles: close other programs or use a smaller model") from None
    if not bool(torch.isfinite(acc).all()):
        raise LesionsegInputError(model.path, "the model produced NaN or infinite probabilities: its weights are "
                                              "broken (choose another model version)")
    timings["network"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    prob_w = calibrated_output(acc, wacc, 0, disc, cfg.calibration)
    dis_w = (dacc / wacc).numpy() * disc if n_views(model.net, tta) > 1 else None
    head_w = (acc[-1] / wacc).numpy() if model.config.network.error_head else None
    fz_w = fuzzy_map(prob_w, dis_w, cfg.fuzzy, head_w) * disc
    # One after the other: torch's upsampling already uses every core (running the two maps'
    # upsampling on two threads measured slower, and two full-size maps in the making at once
    # raise the peak for very large photos).
    box_disc = geom.box_fov_mask()
    prob = from_work(prob_w, geom, box_disc)
    fuzzy = from_work(fz_w, geom, box_disc)
    mask, labels = labelled_mask(prob, thr, cfg.min_lesion_area)
    lesions, labels = lesion_table(mask, prob, fuzzy, mm_per_px, labels=labels)
    others, anatomy = _other_outputs(model, acc, wacc, disc, box_disc, x, geom, types, mm_per_px)
    timings["postprocess"] = time.perf_counter() - t2
    if locate_disc and OD not in model.config.network.outputs:
        located, timings["disc"] = disc_locator.locate_disc(rgb, fov, dev, dtype, work)
        anatomy = located.with_field(geom)
    lesions = [les.located(anatomy) for les in lesions]
    yield Progress("done", 1, 1)
    precision_used = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
    return Prediction(prob, mask, fuzzy, labels, lesions, geom, model.version, thr, timings, notes, precision_used,
                      cfg.review, others, anatomy, tta, model.config.grids)


def work_probability(model: LoadedModel, x: NDArray[np.float32], disc: NDArray[np.bool_], *,
                     device: torch.device | str | None = None, tta: str | None = None,
                     precision: str = "auto") -> Generator[Progress, None, NDArray[np.float32]]:
    """The calibrated hemorrhage probability ``(h, w)`` on the working grid of an input already
    prepared (``prepare``): what :func:`predict` computes before bringing it to full size, with
    the model's tiles, TTA and calibration (no out-of-memory fallback), on the model's own grid
    only (not ``inference.extra_grids``). For training code that works on the working grid
    (pseudo-labels)."""
    cfg = model.config.inference
    dev = torch.device(device) if device is not None else next(model.net.parameters()).device
    tta = tta or cfg.tta
    acc, _, wacc = yield from _blend_tiles(_place(model.net, dev), torch.from_numpy(x), cfg.tile_size,
                                           cfg.tile_overlap, model.config.network.stride, tta, dev,
                                           autocast_dtype(precision, dev), True, n_channels(model.config.network))
    return calibrated_output(acc, wacc, 0, disc, cfg.calibration)


def _other_outputs(model: LoadedModel, acc: torch.Tensor, wacc: torch.Tensor, disc: NDArray[np.bool_],
                   box_disc: NDArray[np.bool_], x: NDArray[np.float32], geom: Geometry, types: list[str] | None,
                   mm_per_px: float | None) -> tuple[dict[str, TypeMaps], Anatomy]:
    """The outputs besides HE that ``types`` asks for (None: all the model has), at full size,
    each calibrated and thresholded with its own settings; the disc and fovea from the OD
    output (located on the working grid whether or not OD is asked for)."""
    cfg = model.config.inference
    outputs = model.config.network.outputs
    others: dict[str, TypeMaps] = {}
    has_od, region = False, None
    for k, name in enumerate(outputs[1:], start=1):
        wanted = types is None or name in types
        if not wanted and name != OD:
            continue
        thr, knots = cfg.for_type(name)
        p_w = calibrated_output(acc, wacc, k, disc, knots)
        if name == OD:
            has_od, region = True, disc_region(p_w, thr, disc, geom)
        if not wanted:
            continue
        p = from_work(p_w, geom, box_disc)
        m, lab = labelled_mask(p, thr, 0 if name == OD else cfg.min_lesion_area)
        les: list[Lesion] = []
        if name == OD:
            m = _one_disc(m, lab, region, geom)
        else:
            fz = np.zeros_like(p)
            on = m.astype(bool)
            fz[on] = binary_entropy(p[on])  # only lesion pixels count towards fuzzy_fraction
            les = lesion_table(m, p, fz, mm_per_px, labels=lab, kind=name)[0]
        others[name] = TypeMaps(p, m, thr, les)
    anatomy = (locate_region(region, x[1], disc, geom) if has_od else Anatomy(note=NO_OD_OUTPUT)).with_field(geom)
    for maps in others.values():
        maps.lesions = [les.located(anatomy) for les in maps.lesions]
    return others, anatomy


def _one_disc(mask: NDArray[np.uint8], lab: NDArray[np.int32], region: NDArray[np.bool_] | None, geom: Geometry
              ) -> NDArray[np.uint8]:
    """The full-size optic-disc ``mask`` (labels ``lab``) reduced to the parts that meet the
    working-grid ``region`` the disc was located from (:func:`anatomy.disc_region`): the mask,
    the outline and the distances all name the same disc. A part meets the region when it holds
    the input pixel at the centre of one of the region's working pixels (a few px apart; the
    region already spans the gaps vessels cut)."""
    if region is None:
        return np.zeros_like(mask)
    fy, fx = geom.to_input(*np.nonzero(region))
    iy = np.clip(np.rint(fy).astype(np.intp), 0, lab.shape[0] - 1)
    ix = np.clip(np.rint(fx).astype(np.intp), 0, lab.shape[1] - 1)
    keep = np.zeros(int(lab.max()) + 1, bool)
    keep[lab[iy, ix]] = True
    keep[0] = False
    return keep[lab].view(np.uint8)


MIN_TILE = 128


def is_out_of_memory(err: BaseException) -> bool:
    """A failed allocation: CUDA's OutOfMemoryError, Python's MemoryError, or the RuntimeError
    PyTorch's CPU allocator raises ("DefaultCPUAllocator: can't allocate memory")."""
    oom = getattr(torch.cuda, "OutOfMemoryError", ())
    if isinstance(err, MemoryError) or (bool(oom) and isinstance(err, oom)):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


_FUSED: weakref.WeakKeyDictionary[torch.nn.Module, tuple[tuple[int, ...], torch.nn.Module]] = (
    weakref.WeakKeyDictionary())


def inference_net(net: torch.nn.Module) -> torch.nn.Module:
    """``net`` with its BatchNorms folded into the convolutions, conv+ReLU pairs fused and the
    U-Net decoders' concatenations left out (a cached copy; rebuilt when any parameter or
    buffer of ``net`` has changed in place since, e.g. by training)."""
    key = tuple(t._version for t in itertools.chain(net.parameters(), net.buffers()))
    hit = _FUSED.get(net)
    if hit is None or hit[0] != key:
        fused = fold_batchnorm(net)[0]
        fuse_conv_relu(fused)
        fuse_decoder_joins(fused)
        hit = (key, fused)
        _FUSED[net] = hit
    return hit[1]


def _place(net: torch.nn.Module, dev: torch.device) -> torch.nn.Module:
    return inference_net(net).to(dev, memory_format=torch.channels_last).eval()


def _n_tiles(h: int, w: int, ts: int, overlap: float) -> int:
    return len(tile_starts(h, ts, overlap)) * len(tile_starts(w, ts, overlap))


def _blend_tiles(net: torch.nn.Module, xt: torch.Tensor, ts: int, overlap: float, stride: int, tta: str,
                 dev: torch.device, dtype: torch.dtype | None = None, speedups: bool = True, n_outputs: int = 1,
                 first: int = 0, total: int | None = None
                 ) -> Generator[Progress, None, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Run every tile, accumulating Gaussian-weighted probabilities (``(T, h, w)``, one per
    output), the hemorrhage output's disagreements and the weights; progress counts TTA views
    over all tiles (from ``first`` of ``total`` when this grid is one of several)."""
    _, h, w = xt.shape
    ys, xs = tile_starts(h, ts, overlap), tile_starts(w, ts, overlap)
    n_tiles = len(ys) * len(xs)
    total = n_tiles * n_views(net, tta) if total is None else total
    acc, dacc, wacc = torch.zeros(n_outputs, h, w), torch.zeros(h, w), torch.zeros(h, w)
    yield Progress("tiles", first, total)
    done = first

    def advance(n_views: int) -> Progress:
        nonlocal done
        done += n_views
        return Progress("tiles", done, total)

    with torch.inference_mode():
        for y0 in ys:
            for x0 in xs:
                tile = xt[:, y0:y0 + ts, x0:x0 + ts]
                th, tw = tile.shape[-2:]
                mean, dis = yield from relay(_run_tile(net, tile, stride, tta, dev, dtype, speedups), advance)
                win = torch.from_numpy(gaussian_window(th, tw)) if n_tiles > 1 else torch.ones(th, tw)
                acc[:, y0:y0 + th, x0:x0 + tw] += mean * win
                wacc[y0:y0 + th, x0:x0 + tw] += win
                if dis is not None:
                    dacc[y0:y0 + th, x0:x0 + tw] += dis * win
    return acc, dacc, wacc


def onto_grid(maps: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Maps ``(T, h', w')`` on one working grid of a photo brought onto another grid ``shape``
    of the same box: bilinear, antialiased from a finer grid (the grids cover the box edge to
    edge, so ``align_corners=False`` maps them onto each other exactly)."""
    finer = maps.shape[-2] > shape[0]
    return F.interpolate(maps[None].float(), size=shape, mode="bilinear", align_corners=False, antialias=finer)[0]


def _blend_grids(net: torch.nn.Module, xt: torch.Tensor, extra: list[NDArray[np.float32]], ts: int, overlap: float,
                 stride: int, tta: str, dev: torch.device, dtype: torch.dtype | None, speedups: bool, n_outputs: int
                 ) -> Generator[Progress, None, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """:func:`_blend_tiles` on the model's grid (``xt``) and on each of the ``extra`` grids'
    inputs (the same box at other sizes: ``inference.extra_grids``), one progress count over
    all. Returns the model's grid's accumulators with ``acc / wacc`` the mean over the grids of
    each grid's probabilities (:func:`onto_grid`); the hemorrhage views' disagreement stays the
    model's grid's."""
    _, h, w = xt.shape
    units = [_n_tiles(*x.shape[-2:], ts, overlap) * n_views(net, tta) for x in [xt, *extra]]
    acc, dacc, wacc = yield from _blend_tiles(net, xt, ts, overlap, stride, tta, dev, dtype, speedups, n_outputs,
                                              0, sum(units))
    if not extra:
        return acc, dacc, wacc
    mean = acc / wacc
    for i, x in enumerate(extra, start=1):
        a, _, wa = yield from _blend_tiles(net, torch.from_numpy(x), ts, overlap, stride, tta, dev, dtype, speedups,
                                           n_outputs, sum(units[:i]), sum(units))
        mean += onto_grid(a / wa, (h, w))
    return mean / (1 + len(extra)) * wacc, dacc, wacc
