"""Batch jobs over many files as generators of events: ``predict_files`` and
``evaluate_pairs``. The CLI draws a progress bar from the events; the plugin can run the same
generators in a worker. A bad file becomes a ``failed`` event (with ``keep_going``) or
raises :class:`LesionsegInputError`; outputs already written are never touched again."""

from __future__ import annotations

import time
from collections.abc import Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import LesionsegInputError
from .image_io import ImageMeta, list_images, read_image, read_mask
from .inference import Prediction, Progress, predict
from .metrics import DatasetScores
from .model_folder import LoadedModel
from .outputs import LESION_CSV_COLUMNS, SUMMARY_COLUMNS, lesion_rows, write_csv, write_prediction
from .pairs import Pair, match_pairs


@dataclass
class Failure:
    path: str
    message: str


@dataclass
class BatchResult:
    done: list[str] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


def collect_images(inputs: Iterable[str | Path]) -> list[Path]:
    """Expand files and folders (their images, not recursive) into a list of image paths.
    Paths that do not exist are kept, so that they fail with a clear message in order."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = list_images(p)
            # a folder without images stays in the list and fails in turn ("is a directory")
            out.extend(found or [p])
        else:
            out.append(p)
    stems: dict[str, Path] = {}
    for p in out:
        if p.stem in stems and stems[p.stem] != p:
            raise LesionsegInputError(p, f"has the same name stem as {stems[p.stem]}; outputs would collide")
        stems[p.stem] = p
    return out


def _read(path: Path) -> tuple[np.ndarray, ImageMeta]:
    return read_image(path)


def predict_files(model: LoadedModel, paths: list[Path], out_dir: Path, *, keep_going: bool = False,
                  mm_per_px: float | None = None, device: str | None = None,
                  tta: str | None = None, precision: str = "auto") -> Generator[dict[str, Any], None, BatchResult]:
    """Predict every path into ``out_dir``. Events: ``{"event": "tile", ...}`` per tile,
    ``"image"`` per finished image, ``"failed"`` per bad file. The next image is read in a
    background thread while the current one computes."""
    out_dir.mkdir(parents=True, exist_ok=True)
    result = BatchResult()
    summary_rows: list[dict[str, Any]] = []
    lesion_rows_all: list[dict[str, Any]] = []
    with ThreadPoolExecutor(max_workers=1) as pool:
        nxt: Future | None = pool.submit(_read, paths[0]) if paths else None
        for i, path in enumerate(paths):
            fut = nxt
            nxt = pool.submit(_read, paths[i + 1]) if i + 1 < len(paths) else None
            t0 = time.perf_counter()
            try:
                assert fut is not None
                rgb, meta = fut.result()
                gen = predict(model, rgb, device=device, tta=tta, mm_per_px=mm_per_px, precision=precision)
                while True:
                    try:
                        prog: Progress = next(gen)
                    except StopIteration as stop:
                        pred: Prediction = stop.value
                        break
                    yield {"event": "tile", "image": path.name, "index": i, "done": prog.done, "total": prog.total}
                write_prediction(out_dir, path.stem, pred)
                for note in pred.notes:
                    yield {"event": "note", "image": path.name, "message": note}
            except LesionsegInputError as err:
                result.failures.append(Failure(str(path), str(err)))
                summary_rows.append({"image": path.name, "status": "failed", "error": err.problem})
                yield {"event": "failed", "image": str(path), "message": str(err)}
                if not keep_going:
                    raise
                continue
            secs = time.perf_counter() - t0
            rows = lesion_rows(path.name, pred)
            lesion_rows_all.extend(rows)
            summary_rows.append({
                "image": path.name, "status": "ok", "width": meta.width, "height": meta.height,
                "lesions": len(pred.lesions), "lesion_px": int(pred.mask.sum()),
                "fuzzy_px": int((pred.fuzzy > 0.5).sum()), "model": pred.model_version,
                "threshold": pred.threshold, "seconds": round(secs, 3), "error": "",
            })
            result.done.append(str(path))
            yield {"event": "image", "image": path.name, "index": i, "seconds": secs, "lesions": len(pred.lesions)}
    write_csv(out_dir / "lesions.csv", lesion_rows_all, LESION_CSV_COLUMNS)
    write_csv(out_dir / "summary.csv", summary_rows, SUMMARY_COLUMNS)
    return result


def evaluate_pairs(model: LoadedModel, pairs: list[Pair], *, keep_going: bool = False, device: str | None = None,
                   tta: str | None = None, threshold: float | None = None,
                   pr_bins: int = 256, precision: str = "auto") -> Generator[dict[str, Any], None, tuple[DatasetScores, BatchResult]]:
    """Score the model on image/mask pairs at full input resolution. ``pr_bins=256`` scores
    the probabilities as the 8-bit PNGs ``predict`` writes would be scored."""
    thr = model.config.inference.threshold if threshold is None else threshold
    ds = DatasetScores(threshold=thr, pr_bins=pr_bins)
    result = BatchResult()
    fz = {"errors": 0, "errors_in_fuzzy": 0, "fuzzy_px": 0, "fov_px": 0}
    for i, pair in enumerate(pairs):
        try:
            rgb, _ = read_image(pair.image)
            gt = read_mask(pair.mask, shape=rgb.shape[:2])
            gen = predict(model, rgb, device=device, tta=tta, threshold=thr, precision=precision)
            while True:
                try:
                    prog = next(gen)
                except StopIteration as stop:
                    pred = stop.value
                    break
                yield {"event": "tile", "image": pair.image.name, "index": i, "done": prog.done, "total": prog.total}
        except LesionsegInputError as err:
            result.failures.append(Failure(str(pair.image), str(err)))
            yield {"event": "failed", "image": str(pair.image), "message": str(err)}
            if not keep_going:
                raise
            continue
        valid = gt != 255
        # score on the probability as written to disk (8-bit) so figures match the files
        p8 = np.rint(pred.probability * 255.0) / 255.0
        row = ds.add(pair.id, p8, gt == 1, valid)
        # is the fuzzy map useful? the share of wrong pixels it holds vs the share of the disc it covers
        fov = pred.geometry.input_fov_mask() & valid
        wrong = (pred.mask == 1) != (gt == 1)
        fuzzy = pred.fuzzy > 0.5
        fz["errors"] += int(np.count_nonzero(wrong & fov))
        fz["errors_in_fuzzy"] += int(np.count_nonzero(wrong & fuzzy & fov))
        fz["fuzzy_px"] += int(np.count_nonzero(fuzzy & fov))
        fz["fov_px"] += int(np.count_nonzero(fov))
        result.done.append(str(pair.image))
        yield {"event": "image", "image": pair.image.name, "index": i, **{k: v for k, v in row.items() if k != "image"}}
    result.summary = ds.summary()
    result.summary["fuzzy_error_capture"] = fz["errors_in_fuzzy"] / fz["errors"] if fz["errors"] else float("nan")
    result.summary["fuzzy_area_fraction"] = fz["fuzzy_px"] / fz["fov_px"] if fz["fov_px"] else float("nan")
    return ds, result


def find_eval_pairs(images: Path, masks: Path) -> list[Pair]:
    return match_pairs(images, masks)
