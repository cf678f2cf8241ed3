"""Training data: finding image/mask pairs, preparing them on the working grid (cached), and
lesion-aware random crops with augmentation.

Layouts: ``idrid`` (``<root>/images/*.jpg`` with ``<root>/masks_HE/<stem>_HE.tif``) and
``pairs`` (any images folder and masks folder, matched by file stem; a mask named
``<stem>.png``, ``<stem>_mask.png`` or ``<stem>_HE.tif`` matches image ``<stem>.jpg``).
Label 255 in a mask means "unsure": ignored by the loss.

Other outputs than hemorrhages (``model.network.outputs``, e.g. MA, EX, SE, OD) read their masks
where ``Pair.type_mask`` finds them (``<stem>_<T>.*`` beside the hemorrhage mask, or IDRiD's
``masks_<T>/``); a photo for which a type is unknown (a plugin correction, a folder without
that type's masks) gets 255 there: ignored by that output's loss, never taught as "none".
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from napari_lesionseg.core import preprocess
from napari_lesionseg.core.errors import LesionsegInputError
from napari_lesionseg.core.fov import detect_fov
from napari_lesionseg.core.image_io import read_image
from napari_lesionseg.core.lesion_types import HE
from napari_lesionseg.core.lesions import label_runs
from napari_lesionseg.core.model_config import PreprocessConfig
from napari_lesionseg.core.pairs import Pair, idrid_layout, marks_a_lesion, match_pairs
from napari_lesionseg.core.preprocess import mask_to_work, prepare

from .cameras import Camera, random_camera, shoot_at_size
from .hard_negatives import FalseAlarms
from .train_config import AugmentConfig, CameraAugConfig, DataConfig


def find_pairs(cfg: DataConfig) -> list[Pair]:
    """The pairs a data config names (idrid root, or an images/masks folder pair), without
    ``exclude_ids``."""
    return [p for p in _all_pairs(cfg) if p.id not in set(cfg.exclude_ids)]


def held_out_pairs(cfg: DataConfig) -> list[Pair]:
    """The annotated pairs ``exclude_ids`` keeps out of training (a photo without a mask, such
    as IDRiD_43, is none): a final model's photos that are still unseen."""
    return [p for p in _all_pairs(cfg) if p.id in set(cfg.exclude_ids)] if cfg.exclude_ids else []


def _all_pairs(cfg: DataConfig) -> list[Pair]:
    if cfg.images is None:
        raise LesionsegInputError(None, "no training data: set data.images (and data.masks) or pass --images/--masks")
    root = Path(cfg.images)
    layout = cfg.layout
    if layout == "auto":
        layout = ("idrid" if idrid_layout(root) else
                  "corrections" if (root / "labels").is_dir() and (root / "images").is_dir() and cfg.masks is None
                  else "pairs")
    if layout == "idrid":
        pairs = match_pairs(root / "images", root / "masks_HE", allow_unmatched_images=True)
    elif layout == "corrections":  # a plugin project folder: its photos and latest corrections
        from napari_lesionseg.core.store import Project

        if not (root / "labels").is_dir():
            raise LesionsegInputError(root, "is not a project folder (no labels/): data.layout = 'corrections' "
                                            "needs the folder the plugin saves corrections in")
        pairs = Project(root).corrected_pairs()
        if not pairs:
            raise LesionsegInputError(root, "the project holds no saved correction")
    else:
        if cfg.masks is None:
            raise LesionsegInputError(root, "data.masks (--masks) is required for an images/masks folder pair")
        pairs = match_pairs(root, Path(cfg.masks))
    return pairs


def pair_digests(pairs: list[Pair]) -> dict[str, dict[str, str]]:
    """Each pair's photo and mask sha256 by id: what a model's ``lineage.json`` records as the
    data it trained on, so a later reader can tell whether a file changed."""
    def sha(path: Path) -> str:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()

    return {p.id: {"image_sha256": sha(p.image), "mask_sha256": sha(p.mask)} for p in pairs}


FINAL_CALIBRATION_PHOTOS = 12  # training photos a final or fold model fits calibration and thresholds on


def calibration_subset(train: list[Pair], n: int = FINAL_CALIBRATION_PHOTOS) -> list[Pair]:
    """Every k-th of the training photos (in their order), ``n`` at most: where a model with no
    held-out photos fits its calibration and thresholds (the cross-validation's fold models
    and the final model trained on all photos use the same rule)."""
    return train[:: max(1, len(train) // n)][:n]


def split_pairs(pairs: list[Pair], cfg: DataConfig) -> tuple[list[Pair], list[Pair]]:
    """Deterministic train/validation split; validation is never empty (with one pair, that
    pair validates and trains). ``cfg.final``: every pair trains and the validation photos are
    some of them (``val_ids``, or :func:`calibration_subset`). Reads no file (the benchmarks
    rebuild the folds' splits from names); a run then applies :func:`validation_with_lesions`."""
    ordered = sorted(pairs, key=lambda p: p.id)
    if cfg.final:
        if cfg.val_ids is not None:
            val = [p for p in ordered if p.id in set(cfg.val_ids)]
            return ordered, val or ordered[-1:]
        return ordered, calibration_subset(ordered)
    if cfg.val_ids is not None:
        val = [p for p in ordered if p.id in set(cfg.val_ids)]
    else:
        val = [p for i, p in enumerate(ordered) if i % cfg.val_every == cfg.val_offset % cfg.val_every]
    train = [p for p in ordered if p not in val]
    if not val:
        val = ordered[-1:]
    if not train:
        train = list(val)
    return train, val


def validation_with_lesions(train: list[Pair], val: list[Pair],
                            outputs: list[str] | tuple[str, ...] = (HE,)) -> tuple[list[Pair], list[Pair]]:
    """A validation set that marks no lesion of the ``outputs`` (healthy photos, by chance of
    their names) scores a network that finds nothing perfect (Dice 1.0, AUPR undefined), and
    the run keeps that checkpoint as its best. Then the last training photo with a lesion
    validates instead of training (the only one: it validates and trains, in-sample, as the
    run's ``data`` event shows). Reads the masks until one marks a lesion; IDRiD's folds,
    every photo of which has hemorrhages, are unchanged."""
    if any(marks_a_lesion(p, outputs) for p in val):
        return train, val
    marked = [p for p in train if marks_a_lesion(p, outputs)]
    if not marked:
        return train, val
    if len(marked) >= 2:
        train = [p for p in train if p is not marked[-1]]
    return train, sorted([*val, marked[-1]], key=lambda p: p.id)


@dataclass
class Prepared:
    """One pair on the working grid: ``x (C, h, w) float32``, ``y (h, w) uint8`` (0/1/255,
    hemorrhages), ``fov (h, w) bool``; ``aux (T-1, h, w) uint8`` the other outputs' labels
    (``network.outputs[1:]``, 255 where unknown), or None for an HE-only model. ``views``: the
    same photo through simulated cameras (``data.cameras``), network inputs on the same grid as
    ``x`` (float16 to halve their memory), so labels and disc are shared. ``soft``: a teacher's
    probability as ``round(255 p)`` (a pseudo-labelled photo under ``data.pseudo_soft``: the
    target on every pixel of the disc, ``y`` then only says where lesion crops centre)."""

    id: str
    x: NDArray[np.float32]
    y: NDArray[np.uint8]
    fov: NDArray[np.bool_]
    aux: NDArray[np.uint8] | None = None
    views: tuple[NDArray[np.float16], ...] = ()
    soft: NDArray[np.uint8] | None = None

    def lesion_pixels(self) -> NDArray[np.int64]:
        return np.flatnonzero(self.y == 1)

    def labels(self) -> NDArray[np.uint8]:
        """Every output's labels: ``(h, w)`` for an HE-only model, else ``(T, h, w)``."""
        return self.y if self.aux is None else np.concatenate([self.y[None], self.aux])


def _cache_key(pair: Pair, pre: PreprocessConfig, others: tuple[str, ...] = ()) -> str:
    h = hashlib.sha256()
    files = [pair.image, pair.mask] + [pair.type_mask(t) for t in others if not pair.label_map]
    for f in files:
        if f is None or not f.exists():
            h.update(f"{f}:absent".encode())
            continue
        st = f.stat()
        h.update(f"{f.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
    h.update(json.dumps(asdict(pre), sort_keys=True).encode())
    h.update(f"input:{preprocess.INPUT_VERSION}".encode())  # inputs cached before network_input changed
    h.update(b"label_map" if pair.label_map else b"mask")
    if pair.label_map:
        h.update(",".join(pair.label_types).encode())
    if others:
        h.update(",".join(others).encode())
    return h.hexdigest()[:20]


def _type_label(lab: NDArray[np.uint8] | None, geom) -> NDArray[np.uint8]:
    if lab is None:
        return np.full(geom.work_shape, 255, np.uint8)
    return mask_to_work(lab, geom)


def prepare_pair(pair: Pair, pre: PreprocessConfig, cache_dir: Path | None = None,
                 outputs: list[str] | tuple[str, ...] = (HE,)) -> Prepared:
    """Read, find the disc, crop, rescale and normalise one pair (cached as .npz if asked);
    with ``outputs`` beyond HE, their labels too (``Prepared.aux``)."""
    others = tuple(outputs[1:])
    if cache_dir is not None:
        cf = cache_dir / f"{pair.id}-{_cache_key(pair, pre, others)}.npz"
        if cf.exists():
            z = np.load(cf)
            return Prepared(pair.id, z["x"].astype(np.float32), z["y"], z["fov"], z["aux"] if others else None)
    rgb, _ = read_image(pair.image)
    mask = pair.read_checked_mask(shape=rgb.shape[:2])
    x, geom, disc = prepare(rgb, pre.fov_diameter, pre.green_contrast_sigma)  # exactly what inference sees
    y = mask_to_work(mask, geom)
    labs = pair.read_types(others, rgb.shape[:2]) if others else {}
    aux = np.stack([_type_label(labs[t], geom) for t in others]) if others else None
    if cache_dir is None:
        return Prepared(pair.id, x, y, disc, aux)
    x16 = x.astype(np.float16)
    save_cached(cf, x=x16, y=y, fov=disc, **({"aux": aux} if aux is not None else {}))
    # what the cache gives back: the run that filled the cache trains on the same numbers as
    # every later run (and a resumed sitting) that reads it
    return Prepared(pair.id, x16.astype(np.float32), y, disc, aux)


def photo_cameras(photo_id: str, cfg: CameraAugConfig) -> list[Camera]:
    """The ``cfg.versions`` simulated cameras a training photo is seen through: the same for a
    photo id and ``cfg`` whatever the run, fold or process."""
    if cfg.fixed is not None:  # one camera: more versions would be the same view prepared again
        f = cfg.fixed
        return [Camera(float(f[0]), (float(f[1][0]), float(f[1][1]), float(f[1][2])), float(f[2]), float(f[3]),
                       float(f[4]), float(f[5]), int(f[6]))]
    seed = int.from_bytes(hashlib.sha256(f"{cfg.seed}:{photo_id}".encode()).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    return [random_camera(rng, cfg) for _ in range(cfg.versions)]


def camera_views(pair: Pair, pre: PreprocessConfig, cfg: CameraAugConfig,
                 cache_dir: Path | None = None) -> tuple[NDArray[np.float16], ...]:
    """The network inputs of ``pair``'s photo through its :func:`photo_cameras`, each on the
    clean photo's working grid (the photo is shot, resized back to its size and prepared with
    the clean photo's field of view: a camera changes the pixels, not where the lesions are)."""
    cams = photo_cameras(pair.id, cfg)
    key = hashlib.sha256((_cache_key(pair, pre) + repr(cams)).encode()).hexdigest()[:20]
    cf = cache_dir / f"{pair.id}-cams-{key}.npz" if cache_dir is not None else None
    if cf is not None and cf.exists():
        z = np.load(cf)
        return tuple(z[f"v{k}"] for k in range(len(cams)))
    rgb, _ = read_image(pair.image)
    fov = detect_fov(rgb)
    views = tuple(prepare(shoot_at_size(rgb, cam), pre.fov_diameter, pre.green_contrast_sigma, fov=fov)[0]
                  .astype(np.float16) for cam in cams)
    if cf is not None:
        save_cached(cf, **{f"v{k}": v for k, v in enumerate(views)})
    return views


def save_cached(cf: Path, **arrays: NDArray) -> None:
    """Write a cache file's arrays (``.npz``) whole or not at all: through a temporary file of
    this process, so processes preparing the same photo do not collide."""
    cf.parent.mkdir(parents=True, exist_ok=True)
    tmp = cf.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(cf)


def _crop(arr: NDArray, y0: int, x0: int, size: int) -> NDArray:
    """Crop ``size x size`` at (y0, x0) from the last two axes, zero-padding past the edges."""
    h, w = arr.shape[-2:]
    out = np.zeros(arr.shape[:-2] + (size, size), arr.dtype)
    ys, xs = max(0, y0), max(0, x0)
    ye, xe = min(h, y0 + size), min(w, x0 + size)
    if ye > ys and xe > xs:
        out[..., ys - y0:ye - y0, xs - x0:xe - x0] = arr[..., ys:ye, xs:xe]
    return out


class PatchSampler:
    """Random training crops: a fraction centred (with jitter) on a lesion pixel (``data.centre_on``:
    any lesion pixel, or a pixel of a lesion drawn first), the rest anywhere inside the disc (or,
    ``data.hard_negatives``, a share of them on a false alarm the network raised there before:
    ``false_alarms``, fed by the trainer); augmented with flips, 90-degree rotations,
    brightness/contrast jitter and Gaussian noise. Returns ``x (B, C, s, s) float32``,
    ``y (B, s, s) uint8`` (``(B, T, s, s)`` for a model with several outputs). When a replay
    photo carries a teacher's probabilities (``Prepared.soft``), every crop also has a soft
    target in ``last_soft (B, s, s) float32``: those probabilities on such a photo's crops
    (where ``y`` then ignores nothing inside the disc), ``y == 1`` on an annotated photo's."""

    def __init__(self, items: list[Prepared], cfg: DataConfig, seed: int,
                 replay: list[Prepared] | None = None, replay_share: float = 0.0,
                 outputs: list[str] | tuple[str, ...] = (HE,)) -> None:
        """``replay``: photos of the base model's own training set, drawn for ``replay_share``
        of the crops (a fine-tune's guard against forgetting); ``items`` stay the training
        images every other user of the sampler sees. ``outputs``: the model's outputs (the
        order of ``Prepared.aux``); a lesion-centred crop centres on a pixel of one of
        ``cfg.centre_types`` the photo has, the type drawn uniformly."""
        if not items:
            raise ValueError("no training images")
        self.items = items
        self.replay = list(replay or [])
        self.replay_share = replay_share if self.replay else 0.0
        self._all = items + self.replay
        self.cfg = cfg
        self.rng = np.random.default_rng(seed)
        self.n_outputs = len(outputs)
        self._unknown_cache: dict[int, NDArray[np.bool_]] = {}
        centre = [outputs.index(t) for t in cfg.centre_types if t in outputs]
        self.lesions = [self._centres(it, centre, cfg.centre_on == "lesion") for it in self._all]
        self.fov_idx = [np.flatnonzero(it.fov) for it in self._all]
        self.fuzzy: list[NDArray[np.float32]] | None = None  # DALE's per-image fuzzy maps, when set
        self.last_idx = np.zeros(0, np.int64)
        self.last_fuzzy = np.zeros((0,), np.float32)
        self.last_where = np.zeros((0,), np.int64)  # (B, s, s) flat image index of each crop pixel, -1 outside
        self.soft = any(it.soft is not None for it in self.replay)
        self.last_soft: NDArray[np.float32] | None = None
        hard = cfg.hard_negatives
        self.false_alarms = FalseAlarms(len(items), hard) if hard.share > 0 else None

    def _unknown(self, i: int, lab: NDArray[np.uint8]) -> NDArray[np.bool_]:
        """Per output channel: is the type unknown everywhere on photo ``i``? (cached)"""
        hit = self._unknown_cache.get(i)
        if hit is None:
            hit = self._unknown_cache[i] = (lab == 255).reshape(lab.shape[0], -1).all(1)
        return hit

    @staticmethod
    def _centres(it: Prepared, channels: list[int], per_lesion: bool = False
                 ) -> list[tuple[NDArray[np.int64], NDArray[np.int64] | None]]:
        """Per centre type the photo has: the flat indices of its pixels (raster order) and,
        ``per_lesion``, grouped by lesion (8-connected component, as the lesion table labels
        them) with where each lesion starts among them (and where the last ends)."""
        out = []
        for c in channels:
            lab = it.y if c == 0 else (it.aux[c - 1] if it.aux is not None else None)
            if lab is None:
                continue
            if not per_lesion:
                idx = np.flatnonzero(lab == 1)
                if len(idx):
                    out.append((idx, None))
                continue
            _, n, idx, ids = label_runs(lab == 1)
            if n:
                order = np.argsort(ids, kind="stable")
                out.append((idx[order], np.searchsorted(ids[order], np.arange(1, n + 2))))
        return out

    def _false_alarm(self, i: int) -> int | None:
        """For ``data.hard_negatives``' share of the background crops: one of photo ``i``'s
        remembered false alarms (None when off, not drawn, or the photo has none yet)."""
        if self.false_alarms is None or self.rng.random() >= self.cfg.hard_negatives.share:
            return None
        return self.false_alarms.draw(i, self.rng)

    def _one(self) -> tuple[NDArray[np.float32], NDArray[np.uint8], int, NDArray[np.float32]]:
        s = self.cfg.crop_size
        if self.replay_share and self.rng.random() < self.replay_share:
            i = len(self.items) + int(self.rng.integers(len(self.replay)))
        else:
            i = int(self.rng.integers(len(self.items)))
        it = self._all[i]
        w = it.y.shape[1]
        kinds = self.lesions[i]
        if kinds and self.rng.random() < self.cfg.lesion_crop_fraction:
            les, bounds = kinds[int(self.rng.integers(len(kinds)))] if len(kinds) > 1 else kinds[0]
            if bounds is None:  # a lesion pixel: large lesions are drawn in proportion to their area
                flat = int(les[self.rng.integers(len(les))])
            else:  # a lesion, then a pixel of it: a 10-px lesion is drawn as often as a 10,000-px one
                k = int(self.rng.integers(len(bounds) - 1))
                flat = int(les[self.rng.integers(bounds[k], bounds[k + 1])])
            jitter = self.rng.integers(-s // 4, s // 4 + 1, size=2)
        elif (remembered := self._false_alarm(i)) is not None:  # where the network erred before
            flat = remembered
            jitter = self.rng.integers(-s // 4, s // 4 + 1, size=2)
        else:
            pool = self.fov_idx[i]
            flat = int(pool[self.rng.integers(len(pool))]) if len(pool) else int(self.rng.integers(it.y.size))
            jitter = np.zeros(2, int)
        cy, cx = divmod(flat, w)
        lo, hi = self.cfg.augment.zoom
        m = s  # the side of the photo's square the crop shows, resampled to s when zoomed
        if (lo, hi) != (1.0, 1.0):
            m = max(8, int(round(s / float(np.exp(self.rng.uniform(np.log(lo), np.log(hi)))))))
            jitter = jitter * m // s
        y0, x0 = cy - m // 2 + int(jitter[0]), cx - m // 2 + int(jitter[1])
        src = it.x
        if it.views and self.cfg.cameras.share and self.rng.random() < self.cfg.cameras.share:
            src = it.views[int(self.rng.integers(len(it.views)))]
        x = _crop(src, y0, x0, m).astype(np.float32)
        lab = it.labels()
        if self.n_outputs > 1 and lab.ndim == 2:  # a photo labelled for HE only (a replay photo): the rest unknown
            lab = np.concatenate([lab[None], np.full((self.n_outputs - 1,) + lab.shape, 255, np.uint8)])
        y = _crop(lab, y0, x0, m)
        if y.ndim == 3:  # a type unknown for the photo stays unknown past its edge (zero padding says "none")
            y[self._unknown(i, lab)] = 255
        f = (_crop(self.fuzzy[i], y0, x0, m) if self.fuzzy is not None and i < len(self.items)
             else np.zeros((m, m), np.float32))
        # where each crop pixel comes from (flat index into the image, -1 outside it), carried
        # through the same geometric transforms: DALE's online statistics map predictions back
        h = it.y.shape[-2]
        rows, cols = np.arange(y0, y0 + m), np.arange(x0, x0 + m)
        inside = ((rows >= 0) & (rows < h))[:, None] & ((cols >= 0) & (cols < w))[None, :]
        where = np.where(inside, rows[:, None] * w + cols[None, :], -1).astype(np.float32)  # exact below 2**24
        maps = [f, where]
        if self.soft:  # the soft target rides with the fuzzy map and the source pixels
            if it.soft is not None:
                maps.append(_crop(it.soft, y0, x0, m).astype(np.float32) / 255.0)
                y = np.where(y == 255, np.uint8(0), y)  # the teacher's probability is the target on every pixel
            else:
                maps.append((y == 1).astype(np.float32))
        fw = np.stack(maps)
        if m != s:
            x, y, fw = zoom_crop(x, y, fw, s)
        x, y, fw = augment(x, y, self.cfg.augment, self.rng, fw)
        return x, y, i, fw

    def batch(self) -> tuple[NDArray[np.float32], NDArray[np.uint8]]:
        """``(x, y)``; the crops' image indices, fuzzy maps and source pixels are kept in
        ``last_idx``, ``last_fuzzy`` and ``last_where``."""
        xs, ys, idx, fws = zip(*(self._one() for _ in range(self.cfg.batch_size)))
        fw = np.stack(fws)
        self.last_idx = np.asarray(idx, np.int64)
        self.last_fuzzy = fw[:, 0].astype(np.float32)
        self.last_where = fw[:, 1].astype(np.int64)
        self.last_soft = fw[:, 2].astype(np.float32) if self.soft else None
        return np.stack(xs), np.stack(ys)


def zoom_crop(x: NDArray[np.float32], y: NDArray[np.uint8], maps: NDArray[np.float32],
              s: int) -> tuple[NDArray[np.float32], NDArray[np.uint8], NDArray[np.float32]]:
    """An ``(m, m)`` crop resampled to ``(s, s)``: the image bilinearly (antialiased when it
    shrinks; pixels outside the disc stay 0), the labels and the ``(k, m, m)`` maps (the fuzzy
    map, the source pixels, a soft target) by nearest neighbour, so every label is one the
    annotator drew and DALE's statistics still map each pixel back to a pixel of the photo."""
    import torch
    import torch.nn.functional as F

    m = y.shape[-1]
    xt = torch.from_numpy(np.ascontiguousarray(x))[None]
    xs = F.interpolate(xt, size=(s, s), mode="bilinear", align_corners=False, antialias=m > s)[0].numpy()
    near = np.minimum(((np.arange(s) + 0.5) * m / s).astype(np.int64), m - 1)
    pick = np.ix_(near, near)
    yz = y[(..., *pick)] if y.ndim == 3 else y[pick]
    inside = np.any(x != 0, axis=0)[pick]
    return (xs * inside).astype(np.float32), np.ascontiguousarray(yz), maps[(..., *pick)]


def augment(x: NDArray[np.float32], y: NDArray[np.uint8], cfg: AugmentConfig,
            rng: np.random.Generator, extra: NDArray | None = None) -> tuple:
    """Geometric transforms shared by image ``(C, s, s)``, mask ``(s, s)`` and an optional
    extra map (DALE's fuzzy map); photometric ones on the image only (the zero surround stays
    zero). Returns ``(x, y)``, or ``(x, y, extra)`` when ``extra`` is given."""
    e = extra if extra is not None else np.zeros(y.shape, np.float32)
    if cfg.hflip and rng.random() < 0.5:
        x, y, e = x[..., ::-1], y[..., ::-1], e[..., ::-1]
    if cfg.vflip and rng.random() < 0.5:
        x, y, e = x[..., ::-1, :], y[..., ::-1, :], e[..., ::-1, :]
    if cfg.rot90:
        k = int(rng.integers(4))
        if k:
            x, y, e = (np.rot90(a, k, axes=(-2, -1)) for a in (x, y, e))
    x = np.ascontiguousarray(x)
    y = np.ascontiguousarray(y)
    e = np.ascontiguousarray(e)
    inside = np.any(x != 0, axis=0)
    if cfg.contrast or cfg.brightness:
        c = x.shape[0]
        gain = 1.0 + rng.uniform(-cfg.contrast, cfg.contrast, size=(c, 1, 1))
        shift = rng.uniform(-cfg.brightness, cfg.brightness, size=(c, 1, 1))
        x = (x * gain + shift * inside).astype(np.float32)
    if cfg.gaussian_noise_sigma and rng.random() < cfg.noise_p:
        x = x + (rng.standard_normal(x.shape).astype(np.float32) * cfg.gaussian_noise_sigma) * inside
    if extra is not None:
        return x.astype(np.float32), y, e
    return x.astype(np.float32), y
