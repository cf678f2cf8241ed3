"""The optic disc and the fovea for a model without an optic-disc output (the HE-only default,
its fine-tuned versions): placed by the bundled ``multi`` model's disc output, so that every
model's lesions have their distance from the disc and their zone.

Only what the disc needs is run: one of ``multi``'s two networks (the one trained through
simulated cameras), one view, on a coarse working grid of 320 px across the fundus (a seventh of
the pixels of the models' 832-px grid, made from the predicting model's working image), with the
disc's threshold 0.4 instead of ``multi``'s own 0.24 (the coarse grid's blurrier edges make the
region larger). The region is then located as a model's own disc output is
(``anatomy.disc_region`` / ``locate_region``; the fovea from the coarse grid's green channel).

Measured (``benchmarks/disc_locator.py``, ``results/disc_locator_2026-12-07.json``, the 2-core
Xeon with AMX): 0.06-0.08 s a photo. On the 250 unlabelled IDRiD photos at even positions (those
at odd positions chose the threshold), against ``multi`` itself (both networks, its 832-px grid,
a mirror view): both found a disc on 248, one each only by one of them; the centre within 0.5 disc
diameters (DD) of ``multi``'s on 247 (median 0.024 DD), the diameter 1.03 times ``multi``'s
(median), the fovea within 0.5 DD on 228. On the 54 annotated training photos (which ``multi``
trained on, but the two samples) every centre within 0.5 DD of the annotated disc's (median 0.038
DD, ``multi`` itself 0.022), the diameter 1.08 times the annotated one's (``multi``: 1.03).
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from .anatomy import NO_OD_OUTPUT, Anatomy, disc_region, locate_region
from .bundled import bundled_model_dir
from .errors import LesionsegInputError
from .lesion_types import OD
from .progress import run_to_end
from .runtime import autocast_dtype

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from .fov import FieldOfView
    from .model_config import ModelConfig
    from .preprocess import Geometry

LOCATOR_MODEL = "multi"  # the bundled model whose disc output places the disc
MEMBER = 1  # its network trained through simulated cameras
GRID = 320  # px across the fundus
THRESHOLD = 0.4  # on the disc output's calibrated probability (benchmarks/disc_locator.py chose it)
SOURCE = f"the bundled '{LOCATOR_MODEL}' model's optic-disc output on a {GRID}-px grid"

_LOCK = threading.Lock()
_CACHE: dict[str, tuple[torch.nn.Module, ModelConfig]] = {}


def _locator(dev: torch.device) -> tuple[torch.nn.Module, ModelConfig]:
    """``(the network ready for inference on dev, its model's config)``, loaded once per device."""
    from .inference import _place
    from .model_folder import load_model_folder
    from .models.ensemble import members

    with _LOCK:
        hit = _CACHE.get(str(dev))
        if hit is None:
            model = load_model_folder(bundled_model_dir(LOCATOR_MODEL))
            nets = members(model.net)
            hit = (_place(nets[min(MEMBER, len(nets) - 1)], dev), model.config)
            _CACHE[str(dev)] = hit
    return hit


def disc_probability(rgb: NDArray[np.uint8], fov: FieldOfView, dev: torch.device, dtype: torch.dtype | None,
                     work: NDArray[np.uint8] | None = None
                     ) -> tuple[NDArray[np.float32], NDArray[np.float32], Geometry, NDArray[np.bool_]]:
    """The locator's calibrated disc probability on its coarse grid, with that grid's network
    input, geometry and fundus mask (``preprocess.coarser``: from ``work``, the predicting
    model's finer working image of the photo, when given). Raises what loading the bundled
    model raises."""
    from .inference import _blend_tiles, calibrated_output, n_channels
    from .preprocess import coarser

    net, cfg = _locator(dev)
    k, knots = cfg.network.outputs.index(OD), cfg.inference.for_type(OD)[1]
    x, geom, disc = coarser(rgb, work, fov, GRID, cfg.preprocess.green_contrast_sigma)
    acc, _, wacc = run_to_end(_blend_tiles(net, torch.from_numpy(x), cfg.inference.tile_size,
                                           cfg.inference.tile_overlap, cfg.network.stride, "none", dev, dtype, True,
                                           n_channels(cfg.network)))
    return calibrated_output(acc, wacc, k, disc, knots), x, geom, disc


def locate_disc(rgb: NDArray[np.uint8], fov: FieldOfView, dev: torch.device, dtype: torch.dtype | None,
                work: NDArray[np.uint8] | None = None) -> tuple[Anatomy, float]:
    """The disc and fovea of photo ``rgb`` (its field of view ``fov``; ``work``: a finer working
    image of it, see :func:`disc_probability`) in input pixels, with
    ``disc_source`` saying where the disc came from, and the seconds it took. Never fails the
    prediction it serves: when the bundled model cannot be loaded (removed or damaged) or memory
    runs out (on a GPU it retries on the CPU first), an Anatomy without a disc whose note says why."""
    from .inference import is_out_of_memory

    t0 = time.perf_counter()
    while True:
        try:
            p, x, geom, disc = disc_probability(rgb, fov, dev, dtype, work)
            break
        except (LesionsegInputError, OSError) as err:
            return Anatomy(note=f"{NO_OD_OUTPUT}, and the bundled '{LOCATOR_MODEL}' model that places the disc for "
                                f"such models could not be loaded ({err})"), time.perf_counter() - t0
        except (Exception, MemoryError) as err:  # noqa: BLE001 - only out-of-memory is handled, the rest re-raised
            if not is_out_of_memory(err):
                raise
            if dev.type == "cpu":
                return Anatomy(note=f"{NO_OD_OUTPUT}, and there was not enough memory to place the disc with the "
                                    f"bundled '{LOCATOR_MODEL}' model"), time.perf_counter() - t0
            dev, dtype = torch.device("cpu"), autocast_dtype("auto", torch.device("cpu"))
    anatomy = locate_region(disc_region(p, THRESHOLD, disc, geom), x[1], disc, geom)
    if anatomy.disc_centre is not None:
        anatomy = replace(anatomy, disc_source=SOURCE)
    return anatomy, time.perf_counter() - t0
