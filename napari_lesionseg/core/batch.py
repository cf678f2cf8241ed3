"""Batch jobs over many files as generators of events: ``predict_files`` and
``evaluate_pairs``. The CLI draws a progress bar from the events; the plugin can run the same
generators in a worker. A bad file becomes a ``failed`` event (with ``keep_going``) or
raises :class:`LesionsegInputError`; outputs already written are never touched again."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import numpy as np

from .errors import LesionsegInputError
from .fuzzy import binary_entropy
from .image_io import list_images, path_problem, read_image, subfolders
from .inference import Prediction, Progress, predict
from .lesion_types import HE, OD
from .metrics import DatasetScores, LesionCounts
from .model_folder import LoadedModel
from .outputs import (
    LESION_CSV_COLUMNS,
    NOTES_SEPARATOR,
    SUMMARY_COLUMNS,
    anatomy_row,
    as_written,
    check_prob_bits,
    lesion_rows,
    write_folder_csv,
    write_prediction,
)
from .pairs import Pair, pairs_of, without_masks
from .progress import relay
from .review import review_regions
from .review_metrics import QueueReach, ReviewTally, queue_reach, top_capture
from .session import store_prediction
from .store import Project

T = TypeVar("T")


@dataclass
class Failure:
    path: str
    message: str


@dataclass
class BatchResult:
    done: list[str] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    #: evaluate only: the accumulated scores by output ("HE" and each other type scored) and the
    #: lesion-level counts, for pooling over runs (``DatasetScores.state``)
    scores: dict[str, DatasetScores] = field(default_factory=dict)
    lesions: LesionCounts | None = None

    def score_state(self) -> dict[str, Any]:
        """The scores as JSON-ready state, to pool with other runs' (``metrics.pool_scores``)."""
        return {"scores": {t: d.state() for t, d in self.scores.items()},
                "lesions": None if self.lesions is None else asdict(self.lesions)}


def collect_images(inputs: Iterable[str | Path], subfolders_hint: str = "") -> list[Path]:
    """Expand files and folders (their images, not recursive) into a list of image paths.
    ``subfolders_hint``: what to do with a folder whose photos are all in subfolders (default:
    add ``--recursive``, as ``predict`` takes)."""
    return collect_named(inputs, subfolders_hint=subfolders_hint)[0]


def collect_named(inputs: Iterable[str | Path], *, recursive: bool = False,
                  exclude: Iterable[Path | None] = (), subfolders_hint: str = "") -> tuple[list[Path], list[str]]:
    """Expand files and folders into image paths and their names in a batch's outputs: a file's
    name, or with ``recursive`` a photo's path below the folder given (``p1/OD.jpg``: a clinic's
    patient folders, each with an ``OD.jpg``, keep apart in the outputs, which mirror the
    subfolders). Folders in ``exclude`` (the run's own output and project folders) and hidden
    ones are not entered. Paths that do not exist are kept, so that they fail with a clear
    message in order; when no input is a file at all (a mistyped folder, an empty one) the
    first is refused at once, before a model is loaded or an output folder made (a run wrote
    a summary of one failed row named after the folder); a folder with photos only in its
    subfolders is refused at once without ``recursive``."""
    skip = [Path(e).resolve() for e in exclude if e is not None]
    paths: list[Path] = []
    names: list[str] = []
    for item in inputs:
        p = Path(item)
        if not p.is_dir():
            paths.append(p)
            names.append(p.name)
            continue
        found = without_masks(list_images(p))
        below = _photos_below(p, skip, None if recursive else _BELOW_ENOUGH) if recursive or not found else []
        if below and not recursive:
            raise LesionsegInputError(p, f"holds no photos itself but its subfolders hold {len(below)}"
                                         f"{'+' if len(below) >= _BELOW_ENOUGH else ''}: "
                                         f"{subfolders_hint or 'add --recursive (the outputs mirror the subfolders)'}")
        for f in found + below:
            paths.append(f)
            names.append(f.relative_to(p).as_posix())
        if not found and not below:
            paths.append(p)  # fails in turn ("is a directory")
            names.append(p.name)
    paths, names = _once(paths, names)
    if paths and all(path_problem(p) for p in paths):  # stops at the first file (a folder's photos: its first)
        more = f"; nor is the other input{'s' if len(paths) > 2 else ''} a photo" if len(paths) > 1 else ""
        raise LesionsegInputError(paths[0], f"{path_problem(paths[0])}{more}: nothing to segment")
    return paths, names


def _once(paths: list[Path], names: list[str]) -> tuple[list[Path], list[str]]:
    """Each photo once, at its first place: one given twice (``predict a.jpg a.jpg``, or a
    folder and a photo in it) was segmented twice and listed twice in the tables, doubling its
    lesions in any count made from them."""
    seen: set[Path] = set()
    kept = []
    for p, name in zip(paths, names):
        try:
            key = p.resolve()
        except OSError:
            key = p
        if key not in seen:
            seen.add(key)
            kept.append((p, name))
    return [p for p, _ in kept], [n for _, n in kept]


_BELOW_ENOUGH = 1000  # a folder's subfolders are searched no further when only asking whether they hold photos


def _photos_below(folder: Path, skip: list[Path], limit: int | None = None) -> list[Path]:
    """The photos in ``folder``'s subfolders, at any depth (sorted by path; hidden folders and
    those in ``skip`` not entered); with ``limit``, the first ``limit`` or so."""
    out: list[Path] = []
    for here in subfolders(folder, skip):
        out.extend(without_masks(list_images(here)))
        if limit is not None and len(out) >= limit:
            break
    return out


def output_key(name: str) -> str:
    """A photo's name in a batch's outputs without its suffix: its output files' stem
    (``p1/OD.jpg`` -> ``p1/OD``, written as ``p1/OD_mask.png`` ...)."""
    return PurePosixPath(name).with_suffix("").as_posix()


def colliding_outputs(paths: list[Path], names: list[str]) -> None:
    """Refuse two photos whose outputs would be written to the same files (``OD.jpg`` and
    ``OD.png``, or two folders' ``OD.jpg`` given without ``--recursive``)."""
    keys: dict[str, Path] = {}
    for p, name in zip(paths, names):
        key = output_key(name)
        if key in keys and keys[key] != p:
            raise LesionsegInputError(p, f"has the same name stem as {keys[key]}; outputs would collide"
                                         + (" (give their folder with --recursive: the outputs then mirror its "
                                            "subfolders)" if keys[key].parent != p.parent else ""))
        keys[key] = p


def writable_folder(out_dir: Path) -> Path:
    """Create ``out_dir`` if needed and prove it takes files, before any work is done: a path
    below a file, a read-only or a full disk fail here with one clear error, not after the
    whole inference."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise LesionsegInputError(out_dir, "is a file, not a folder; choose an output folder") from None
    except NotADirectoryError:
        raise LesionsegInputError(out_dir, "lies below a file, not a folder; choose another output folder") from None
    except OSError as err:
        raise LesionsegInputError(out_dir, f"cannot be created ({err.strerror or err})") from None
    try:
        with tempfile.TemporaryFile(dir=out_dir) as fh:
            fh.write(b"x" * 4096)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as err:
        raise LesionsegInputError(out_dir, f"cannot be written to ({err.strerror or err})") from None
    return out_dir


def predict_files(model: LoadedModel, paths: list[Path], out_dir: Path | None, *, keep_going: bool = False,
                  mm_per_px: float | None = None, device: str | None = None,
                  tta: str | None = None, precision: str = "auto",
                  types: list[str] | None = None, prob_bits: int = 8,
                  project: Project | None = None,
                  names: list[str] | None = None, locate_disc: bool = True
                  ) -> Generator[dict[str, Any], None, BatchResult]:
    """Predict every path into ``out_dir``; ``types`` the lesion types (and OD) to write (None:
    every output of the model); ``prob_bits`` the probability PNGs' depth (8 or 16);
    ``locate_disc``: for a model without a disc output, place the disc with the bundled model's
    (``inference.predict``). With a
    ``project`` each photo is also registered there and its prediction kept as the plugin keeps
    it (``session.store_prediction``): *Review lesions* > *Open next image* then walks the batch
    most uncertain first, with nothing to run; ``out_dir`` None writes nothing else. ``names``:
    each photo's name in the outputs (``collect_named``: ``p1/OD.jpg`` writes ``p1/OD_mask.png``
    ...; default: the file's name). Events:
    ``{"event": "tile", ...}`` per tile (``"stage"`` when a photo's inference is past its
    tiles), ``"image"`` per finished image, ``"failed"`` per bad file (``"stops"``: without
    ``keep_going`` the error is raised next). The next image is read in a background thread
    while the current one computes.

    ``summary.csv`` and ``lesions.csv`` are written however the run ends (Ctrl-C, a cancelled
    generator, an error): the finished photos' rows are never lost, the rest are marked
    ``not run``; an earlier run's rows of other photos in ``out_dir`` stay
    (``write_folder_csv``). A file that cannot be written (disk full) stops the run with an
    error that says which photos' outputs are complete."""
    if out_dir is None and project is None:
        raise ValueError("predict_files needs an output folder, a project or both")
    check_prob_bits(prob_bits)  # before any work
    names = [p.name for p in paths] if names is None else names
    if out_dir is not None:
        colliding_outputs(paths, names)
        writable_folder(out_dir)
    if project is not None:
        writable_folder(project.root / "predictions")
    result = BatchResult()
    summary_rows: list[dict[str, Any]] = []
    lesion_rows_all: list[dict[str, Any]] = []
    stopped = "interrupted"
    written: set[str] = set()  # the output keys of the photos whose outputs were written
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            nxt: Future | None = pool.submit(read_image, paths[0]) if paths else None
            for i, (path, name) in enumerate(zip(paths, names)):
                fut = nxt
                nxt = pool.submit(read_image, paths[i + 1]) if i + 1 < len(paths) else None
                t0 = time.perf_counter()
                try:
                    assert fut is not None
                    rgb, meta = fut.result()
                    pred: Prediction = yield from _tile_events(
                        predict(model, rgb, device=device, tta=tta, mm_per_px=mm_per_px, precision=precision,
                                types=types, locate_disc=locate_disc), name, i)
                except LesionsegInputError as raised:
                    err = raised.naming(path)
                    result.failures.append(Failure(str(path), str(err)))
                    summary_rows.append({"image": name, "status": "failed", "error": err.problem})
                    yield {"event": "failed", "image": str(path), "message": str(err), "stops": not keep_going}
                    if not keep_going:
                        stopped = "stopped"
                        raise err from None
                    continue
                try:
                    if out_dir is not None:
                        write_prediction(out_dir, output_key(name), pred, types, prob_bits)
                    if project is not None:
                        # a photo from a subfolder (p1/OD.jpg, p2/OD.jpg) is told apart by its folder: p1_OD
                        iid = project.add_image(path, readable=True, folder=str(PurePosixPath(name).parent))
                        store_prediction(project, iid, pred)
                except OSError as err:
                    stopped = "stopped"
                    raise _write_error(err, out_dir or project.root, result) from None  # type: ignore[union-attr]
                notes = pred.notes + pred.anatomy.notes()
                for note in notes:
                    yield {"event": "note", "image": name, "message": note}
                secs = time.perf_counter() - t0
                rows = lesion_rows(name, pred, types)
                lesion_rows_all.extend(rows)
                summary_rows.append({
                    "image": name, "status": "ok", "width": meta.width, "height": meta.height,
                    "lesions": len(rows), "lesion_px": int(pred.mask.sum()),
                    "fuzzy_px": int((pred.fuzzy > 0.5).sum()), "model": pred.model_version,
                    "threshold": pred.threshold, "tta": pred.tta, "grids": "+".join(map(str, pred.grids)),
                    "precision": pred.precision, "prob_bits": prob_bits, "seconds": round(secs, 3), "error": "",
                    "notes": NOTES_SEPARATOR.join(notes), **anatomy_row(pred),
                })
                result.done.append(str(path))
                written.add(output_key(name))
                yield {"event": "image", "image": name, "index": i, "seconds": secs, "lesions": len(rows)}
        stopped = ""
    finally:
        if out_dir is not None:
            _write_tables(out_dir, names, summary_rows, lesion_rows_all, written, stopped, result)
    return result


def _write_tables(out_dir: Path, names: list[str], summary_rows: list[dict[str, Any]],
                  lesion_rows_all: list[dict[str, Any]], written: set[str], stopped: str,
                  result: BatchResult) -> None:
    """``summary.csv`` and ``lesions.csv`` of a run however it ended (``stopped``: why it
    ended early, "" when it finished); photos not reached are marked ``not run``."""
    seen = {r["image"] for r in summary_rows}
    summary_rows = summary_rows + [{"image": n, "status": f"not run ({stopped})", "error": ""}
                                   for n in names if stopped and n not in seen]
    try:
        write_folder_csv(out_dir / "lesions.csv", lesion_rows_all, LESION_CSV_COLUMNS, written)
        write_folder_csv(out_dir / "summary.csv", summary_rows, SUMMARY_COLUMNS, written)
    except OSError as err:
        if not stopped:
            raise _write_error(err, out_dir, result) from None


def _write_error(err: OSError, out_dir: Path, result: BatchResult) -> LesionsegInputError:
    done = [Path(p).stem for p in result.done]
    finished = (f"the outputs of {len(done)} photo(s) before it are complete ({', '.join(done[:5])}"
                f"{' ...' if len(done) > 5 else ''})" if done else "no photo's outputs were complete")
    return LesionsegInputError(err.filename or out_dir, f"cannot be written ({err.strerror or err}); {finished}")


def _tile_events(gen: Generator[Progress, None, T], image: str, index: int) -> Generator[dict[str, Any], None, T]:
    """Pass on one photo's inference as ``tile`` events (its tiles and views done of all its
    grids'), its other stages as ``stage`` events; return its result."""
    return relay(gen, lambda p: {"event": "tile" if p.stage == "tiles" else "stage", "stage": p.stage, "image": image,
                                 "index": index, "done": p.done, "total": p.total})


def evaluate_pairs(model: LoadedModel, pairs: list[Pair], *, keep_going: bool = False, device: str | None = None,
                   tta: str | None = None, threshold: float | None = None,
                   precision: str = "auto", types: list[str] | None = None,
                   prob_bits: int = 8) -> Generator[dict[str, Any], None, tuple[DatasetScores, BatchResult]]:
    """Score the model on image/mask pairs at full input resolution. The probabilities are
    scored as the PNGs ``predict --prob-bits`` writes hold them (``prob_bits`` 8: round(255 p),
    16: round(65535 p)), in as many precision-recall bins as the PNG has values, so the figures
    are those of the files. ``types``: other outputs to score too (``summary["types"][T]``),
    against each photo's masks of that type (``Pair.type_mask``; photos for which a type is
    unknown are left out of its score)."""
    pr_bins = 2 ** check_prob_bits(prob_bits)
    thr = model.config.inference.threshold if threshold is None else threshold
    ds = DatasetScores(threshold=thr, pr_bins=pr_bins)
    others = [t for t in (types or []) if t != HE]
    per_type = {t: DatasetScores(threshold=model.config.inference.for_type(t)[0], pr_bins=pr_bins) for t in others}
    result = BatchResult()
    fz = {"errors": 0, "errors_in_fuzzy": 0, "fuzzy_px": 0, "fov_px": 0}
    tally = ReviewTally()
    found = LesionCounts()
    ran: dict[str, Any] = {}  # how the model ran (Prediction.tta, grids, precision), as predict's summary.csv says
    precisions: set[str] = set()  # one, unless an out-of-memory fallback finished a photo on the CPU
    for i, pair in enumerate(pairs):
        try:
            rgb, _ = read_image(pair.image)
            gt = pair.read_checked_mask(shape=rgb.shape[:2])
            type_gt = {t: _type_truth(pair, t, rgb.shape[:2]) for t in others}
            pred = yield from _tile_events(predict(model, rgb, device=device, tta=tta, threshold=thr, precision=precision,
                                                   types=others, locate_disc=False),  # scores need no places
                                           pair.image.name, i)
        except LesionsegInputError as raised:
            err = raised.naming(pair.image)
            result.failures.append(Failure(str(pair.image), str(err)))
            yield {"event": "failed", "image": str(pair.image), "message": str(err), "stops": not keep_going}
            if not keep_going:
                raise err from None
            continue
        ran = {"tta": pred.tta, "grids": list(pred.grids)}  # the same for every photo
        precisions.add(pred.precision)
        row = _score_hemorrhages(pair, pred, gt, prob_bits, thr, ds, found, fz, tally) if pair.knows(HE) else {}
        for t, tg in type_gt.items():
            if tg is not None:  # a type unknown for this photo is not scored on it
                maps = pred.others[t]
                per_type[t].add(pair.id, as_written(maps.probability, prob_bits), tg == 1, tg != 255,
                                with_hd95=False, mask=maps.mask if t == OD else None)
        result.done.append(str(pair.image))
        yield {"event": "image", "image": pair.image.name, "index": i, **{k: v for k, v in row.items() if k != "image"}}
    result.summary = ds.summary()
    result.summary["fuzzy_error_capture"] = fz["errors_in_fuzzy"] / fz["errors"] if fz["errors"] else float("nan")
    result.summary["fuzzy_area_fraction"] = fz["fuzzy_px"] / fz["fov_px"] if fz["fov_px"] else float("nan")
    result.summary.update(tally.summary())
    result.summary.update(found.summary())
    result.summary.update(ran, **({"precision": "+".join(sorted(precisions))} if precisions else {}))
    result.summary["prob_bits"] = prob_bits
    result.summary["types"] = {t: {k: v for k, v in d.summary().items() if not k.startswith("hd95")}
                               for t, d in per_type.items() if d.per_image}
    result.scores = {HE: ds, **{t: d for t, d in per_type.items() if d.per_image}}
    result.lesions = found
    return ds, result


def _score_hemorrhages(pair: Pair, pred: Prediction, gt: np.ndarray, prob_bits: int, thr: float,
                       ds: DatasetScores, found: LesionCounts, fz: dict[str, int], tally: ReviewTally) -> dict[str, Any]:
    """Add one photo's hemorrhage scores (pixels, lesions, the fuzzy map and the review queue);
    returns its row."""
    valid = gt != 255
    # score on the probability as written to disk so figures match the files
    pq = as_written(pred.probability, prob_bits)
    row = ds.add(pair.id, pq, gt == 1, valid)
    row.update(found.add(pq > thr, gt == 1, valid))  # lesion level: found / right lesions
    # is the fuzzy map useful? the share of wrong pixels it holds vs the share of the disc it covers
    fov = pred.geometry.input_fov_mask() & valid
    wrong = (pred.mask == 1) != (gt == 1)
    fuzzy = pred.fuzzy > 0.5
    fz["errors"] += int(np.count_nonzero(wrong & fov))
    fz["errors_in_fuzzy"] += int(np.count_nonzero(wrong & fuzzy & fov))
    fz["fuzzy_px"] += int(np.count_nonzero(fuzzy & fov))
    fz["fov_px"] += int(np.count_nonzero(fov))
    tally.add(*_review_figures(pred, gt, fov, wrong))
    return row


def _type_truth(pair: Pair, name: str, shape: tuple[int, int]) -> np.ndarray | None:
    """A photo's ground truth of another type: its mask, zeros when the type is known absent,
    None when unknown."""
    return pair.read_type(name, shape)


def _review_figures(pred: Prediction, gt: np.ndarray, fov: np.ndarray, wrong: np.ndarray
                    ) -> tuple[int, dict[str, np.ndarray], dict[str, QueueReach]]:
    """One photo's top-k capture and queue reach for the fuzzy map and for the entropy of the
    same probability (its queue: today's regions where entropy > 0.5, by mean entropy)."""
    ent = binary_entropy(pred.probability)
    wrong_in = wrong & fov
    captured = {"fuzzy": top_capture(pred.fuzzy, wrong_in, fov), "entropy": top_capture(ent, wrong_in, fov)}
    truth = (gt == 1) & fov
    queues = {"fuzzy": queue_reach(review_regions(pred.mask, pred.probability, pred.fuzzy, threshold=pred.threshold,
                                                  review=pred.review), truth),
              "entropy": queue_reach(review_regions(pred.mask, pred.probability, ent), truth)}
    return int(np.count_nonzero(wrong_in)), captured, queues


def find_eval_pairs(images: Path, masks: Path | None) -> list[Pair]:
    """``evaluate``'s pairs: ``images`` with ``masks``, or an IDRiD-layout root (``pairs_of``)."""
    return pairs_of(images, masks)
