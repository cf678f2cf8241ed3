"""The files ``lesionseg predict`` writes (ARCHITECTURE.md 6), each atomically."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np

from .atomic import atomic_write_bytes, atomic_write_text
from .image_io import encode_png
from .lesion_types import HE, OD
from .lesions import LESION_COLUMNS

if TYPE_CHECKING:
    from .inference import Prediction


def to_uint8(p: np.ndarray, rows: int = 512) -> np.ndarray:
    """Map [0, 1] floats to 0..255 with ``round(255 p)``, ``rows`` rows at a time (so a
    100-megapixel map needs no full-size float temporaries)."""
    return _to_unsigned(p, np.uint8, rows)


def to_uint16(p: np.ndarray, rows: int = 512) -> np.ndarray:
    """Map [0, 1] floats to 0..65535 with ``round(65535 p)``, ``rows`` rows at a time."""
    return _to_unsigned(p, np.uint16, rows)


def _to_unsigned(p: np.ndarray, dtype: type[np.unsignedinteger], rows: int) -> np.ndarray:
    a = np.asarray(p)
    top = np.float32(np.iinfo(dtype).max)
    out = np.empty(a.shape, dtype)
    for r in range(0, max(a.shape[0], 1), rows):
        blk = a[r:r + rows].astype(np.float32) * top
        np.rint(blk, out=blk)
        np.clip(blk, 0, top, out=blk)
        out[r:r + rows] = blk
    return out


PROB_BITS = (8, 16)


def check_prob_bits(bits: int) -> int:
    """Refuse a probability PNG depth other than 8 or 16."""
    if bits not in PROB_BITS:
        raise ValueError(f"probability PNGs are 8 or 16 bits, not {bits}")
    return bits


def to_prob_png(p: np.ndarray, bits: int = 8) -> np.ndarray:
    """A probability map as its PNG holds it: ``round(255 p)`` (8 bits) or ``round(65535 p)``
    (16 bits)."""
    return to_uint16(p) if check_prob_bits(bits) == 16 else to_uint8(p)


def as_written(p: np.ndarray, bits: int = 8) -> np.ndarray:
    """The probabilities a ``bits``-deep PNG of ``p`` reads back as (float32 in [0, 1]): what
    scores drawn from ``predict``'s files see."""
    top = np.float32(2 ** check_prob_bits(bits) - 1)
    q = np.rint(np.asarray(p, np.float32) * top)
    np.clip(q, 0, top, out=q)
    q /= top
    return q


def write_prediction(out_dir: Path, stem: str, pred: Prediction, types: list[str] | None = None,
                     prob_bits: int = 8) -> list[Path]:
    """The maps of a :class:`Prediction` for ``types`` (None: HE and every other output it
    holds): HE's as :func:`write_maps` writes them; each other lesion type T's as
    ``<stem>_<T>_prob.png`` and ``<stem>_<T>_mask.png`` (the same encodings); the optic disc as
    ``<stem>_OD_mask.png``. All of them or none."""
    written: list[Path] = []
    try:
        if types is None or HE in types:
            written += write_maps(out_dir, stem, pred.probability, pred.mask, pred.fuzzy, prob_bits)
        for name, maps in pred.others.items():
            if types is not None and name not in types:
                continue
            if name == OD:
                written += _write_all({out_dir / f"{stem}_{name}_mask.png": lambda m=maps: _mask255(m.mask)})
            else:
                written += write_maps(out_dir, f"{stem}_{name}", maps.probability, maps.mask, None, prob_bits)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return written


def _mask255(mask: np.ndarray) -> np.ndarray:
    return (np.asarray(mask) > 0).view(np.uint8) * np.uint8(255)


def write_maps(out_dir: Path, stem: str, prob: np.ndarray, mask: np.ndarray, fuzzy: np.ndarray | None,
               prob_bits: int = 8) -> list[Path]:
    """``<stem>_mask.png`` (0/255), ``<stem>_prob.png`` (8-bit, round(255 p); with ``prob_bits``
    16, round(65535 p): a precision-recall curve drawn from the file then keeps the order of
    the many low probabilities that 8 bits tie), ``<stem>_fuzzy.png`` (16-bit, round(65535 f):
    the map ranks pixels, so it keeps the precision 8 bits would tie away; not written when
    ``fuzzy`` is None): the one writer of prediction maps (``lesionseg predict`` and the
    project store)."""
    check_prob_bits(prob_bits)
    jobs: dict[Path, Callable[[], np.ndarray]] = {
        out_dir / f"{stem}_mask.png": lambda: _mask255(mask),
        out_dir / f"{stem}_prob.png": lambda: to_prob_png(prob, prob_bits),
    }
    if fuzzy is not None:
        jobs[out_dir / f"{stem}_fuzzy.png"] = lambda: to_uint16(fuzzy)
    return _write_all(jobs)


def _write_all(jobs: dict[Path, Callable[[], np.ndarray]]) -> list[Path]:
    """Write each map as PNG, atomically, all or none. Each map is converted, encoded and
    written in its own thread (NumPy and the deflate of ``encode_png`` release the GIL)."""
    for path in jobs:
        path.parent.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def write(path: Path) -> None:
        try:
            atomic_write_bytes(path, encode_png(jobs[path]()))
        except OSError as err:  # name the file (a failed write() names none)
            raise OSError(err.errno, err.strerror, str(path)) from None
        written.append(path)

    try:
        with ThreadPoolExecutor(len(jobs)) as pool:
            list(pool.map(write, jobs))
    except BaseException:
        for path in written:  # one photo's maps are written all together or not at all
            path.unlink(missing_ok=True)
        raise
    return list(jobs)


def csv_text(rows: list[dict[str, Any]], columns: list[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
    return buf.getvalue()


def lesion_rows(image: str, pred: Prediction, types: list[str] | None = None) -> list[dict[str, Any]]:
    """One row per lesion of ``types`` (None: all): hemorrhages first, then each other type."""
    return [{"image": image, **les.row()} for les in pred.all_lesions() if types is None or les.type in types]


LESION_CSV_COLUMNS = ["image"] + LESION_COLUMNS
SUMMARY_COLUMNS = ["image", "status", "width", "height", "lesions", "lesion_px", "fuzzy_px",
                   "model", "threshold", "tta", "grids", "precision", "prob_bits", "seconds", "error", "notes",
                   "disc_y", "disc_x", "disc_diameter_px", "disc_from", "fovea_y", "fovea_x", "fovea_method"]


def anatomy_row(pred: Prediction) -> dict[str, Any]:
    """A photo's optic disc and fovea for ``summary.csv`` (input pixels; empty where not known):
    ``disc_from`` says whose disc output placed the disc (the model's own, or for a model without
    one the bundled ``multi`` model's: core/disc_locator.py), ``fovea_method`` whether the fovea
    was found in the photo or estimated from the disc."""
    a = pred.anatomy
    if a.disc_centre is None or not a.disc_diameter:
        return {}
    row = {"disc_y": round(a.disc_centre[0], 1), "disc_x": round(a.disc_centre[1], 1),
           "disc_diameter_px": round(a.disc_diameter, 1),
           "disc_from": "bundled multi model" if a.disc_source else "the model", "fovea_method": a.fovea_method}
    if a.fovea is not None:
        row.update(fovea_y=round(a.fovea[0], 1), fovea_x=round(a.fovea[1], 1))
    return row
#: how a photo's notes (warnings that did not stop it) are joined in ``summary.csv``'s ``notes``
NOTES_SEPARATOR = " | "


def write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    atomic_write_text(path, csv_text(rows, columns))


def write_folder_csv(path: Path, rows: list[dict[str, Any]], columns: list[str], written: set[str]) -> None:
    """Write a folder's table (``summary.csv``, ``lesions.csv``) keeping what an earlier run put
    there: the earlier rows of photos whose outputs this run did not write stay (a second run into
    the same folder adds to its tables instead of replacing them); ``written``: the name stems of
    the photos whose outputs this run wrote, whose earlier rows this run's replace. This run's
    rows of photos it did not write (failed, not run) go in only for photos the earlier table does
    not name: that photo's earlier outputs are still in the folder, and its earlier row says what
    they are; an earlier row with no outputs behind it (failed, not run) gives way to this run's
    row of its photo. An earlier table that cannot be read is kept beside, renamed, never
    overwritten."""
    earlier = _read_rows(path)
    if earlier and rows:
        mine = set().union(*(_names(r) for r in rows))
        earlier = [r for r in earlier if r.get("status") in (None, "", "ok") or not _names(r) & mine]
    if earlier:
        named = set().union(*(_names(r) for r in earlier))
        rows = ([r for r in earlier if not _names(r) & written]
                + [r for r in rows if _names(r) & written or not _names(r) & named])
    write_csv(path, rows, columns)


def _names(row: dict[str, Any]) -> set[str]:
    """A row's photo as written (a file name in ``predict``'s tables, ``p1/OD.jpg`` below a
    folder given with ``--recursive``; a stem in an export's) and without its suffix."""
    image = str(row.get("image") or "")
    return {image, PurePosixPath(image).with_suffix("").as_posix() if image else ""}


def _read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of an earlier table at ``path`` (none if there is no file); a file that is not a
    table with an ``image`` column is renamed to ``<stem>.unreadable-<n><suffix>`` and ignored."""
    if not path.exists():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            if reader.fieldnames and "image" in reader.fieldnames:
                return rows
    except (OSError, UnicodeDecodeError, csv.Error):
        pass
    n = 1
    while (kept := path.with_name(f"{path.stem}.unreadable-{n}{path.suffix}")).exists():
        n += 1
    path.rename(kept)
    return []
