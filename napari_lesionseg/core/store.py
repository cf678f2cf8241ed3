"""The corrections store: a project folder the annotator's work lives in (ARCHITECTURE.md 4).

```
<project>/images/<image_id>.<ext>          copied source photo (or <image_id>.ref.json: path + sha256);
                                           the id is the file stem, or <stem>-2, -3 ... for another photo of that name
<project>/images/<image_id>.png + <image_id>.origin.json
                                           a photo kept as its pixels: a file in a format the project does not list
                                           (WebP, GIF, ...), or a napari layer with no file our reader decodes (made in
                                           memory, read by another plugin); the json names where it came from and
                                           holds the sha256 that identifies it (of that file, or of the pixels)
<project>/labels/<image_id>/v0001.png ...  append-only label versions (0 bg, 1 HE, 2 MA, 3 EX, 4 SE, 255 unsure)
<project>/labels/<image_id>/v0001.json     the lesion types that version was reviewed for (absent: HE only) and
                                           the Review dock's decisions on its regions (``review``)
<project>/labels/<image_id>/latest.json    which version is current
<project>/manifest.jsonl                   one line per save (provenance)
<project>/resume.json                      the photo the review last opened (where a review resumes)
<project>/drafts/<image_id>.png + .json     hand edits and Review decisions not yet saved as a version, kept as
                                           they settle: napari crashing or killed loses none of them (the json:
                                           the version they were made on, when, the decisions, the types
                                           ticked as reviewed); gone once a version is saved
<project>/predictions/<model>/<image_id>_{prob,mask,fuzzy}.png
<project>/predictions/<model>/<image_id>_<T>_{prob,mask}.png   each other output T (MA, EX, SE, OD)
<project>/models/<version>/                model folders (see model_folder.py)
```
A version file is created with ``os.link`` from a fsynced temp file, which fails rather than
replace an existing file: no version is ever overwritten, even by two processes racing. A lock
file serialises saves and image registrations. Versions are read back exactly
(:func:`read_label`: 0, 1 and 255, never the 0/255-means-lesion reading of foreign masks). The
current version is the highest that reads (``latest.json`` is written for people and other
tools, never trusted). A torn last manifest line (a crash mid-append) is skipped with a
warning. Opening a project repairs what an interrupted save left: versions without a manifest
line get one marked ``recovered``, and stale temp files are removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import re
import unicodedata
import warnings
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .atomic import (
    atomic_copy,
    atomic_write_bytes,
    atomic_write_text,
    create_new,
    file_lock,
    is_temp_file,
    remove_stale_temp,
)
from .errors import LesionsegInputError
from .image_io import IMAGE_SUFFIXES, check_label_values, encode_png, read_image, read_label, read_unit_map
from .jsonfile import json_text, parse_json, read_json
from .lesion_types import HE, LESION_TYPES, OUTPUT_TYPES, TYPE_VALUE
from .metrics import confusion, scores
from .outputs import write_maps
from .pairs import Pair

VERSION_RE = re.compile(r"^v(\d{4,})\.png$")
MANIFEST = "manifest.jsonl"
RESUME = "resume.json"  # the photo the review last opened: a review opened again resumes at it
DRAFTS = "drafts"  # unsaved hand edits, one draft per photo (Project.save_draft)
REVIEW_STATUSES = ("accepted", "deleted", "unsure")  # the Review dock's decisions on a region
ORIGIN = ".origin.json"  # beside a photo kept as its pixels: where it came from, and its identity


def _local_time(iso: str) -> str:
    """An ISO time as a person reads it, in local time ("" when it is none)."""
    try:
        return datetime.fromisoformat(iso).astimezone().strftime("%H:%M on %Y-%m-%d")
    except ValueError:
        return iso


@dataclass(frozen=True)
class LabelVersion:
    image_id: str
    version: int
    path: Path


@dataclass(frozen=True, eq=False)  # holds an array: compared by identity, never element by element
class Draft:
    """A photo's work kept against a crash and never saved (:meth:`Project.save_draft`)."""

    label: NDArray[np.uint8]  # the lesions layer's label map as it was
    base_version: int | None  # the version it was made on (None: none saved)
    kept_at: str  # when, as a person reads it: "HH:MM on YYYY-MM-DD", local time
    edited: bool = True  # the label map differs from what it was made on (else decisions only)
    # Review's decisions and the lesion types ticked as reviewed (None: not kept, a draft written
    # before 2026-12-08 held the label map only)
    marks: dict[tuple[str, int, int], str] | None = None
    types: tuple[str, ...] | None = None

    @property
    def what(self) -> str:
        """What it holds, in the docks' words ("hand edits and 3 review decisions")."""
        parts = ["hand edits"] if self.edited else []
        if n := len(self.marks or {}):
            parts.append(f"{n} review decision{'s' if n != 1 else ''}")
        return " and ".join(parts) or "the lesion types ticked as reviewed"


def _review_entries(marks: Mapping[tuple[str, int, int], str] | None, shape: tuple[int, ...]) -> list[list]:
    """Review decisions as a version's or a draft's JSON keeps them: sorted [type, y, x, status],
    those of a known type and status at a pixel of the picture."""
    return sorted([t, int(y), int(x), s] for (t, y, x), s in (marks or {}).items()
                  if t in TYPE_VALUE and s in REVIEW_STATUSES and 0 <= y < shape[0] and 0 <= x < shape[1])


def _parse_review(entries: object, f: Path) -> dict[tuple[str, int, int], str]:
    """The decisions of a version's or a draft's JSON file ``f``; a damaged entry is passed over
    with a warning (the decisions are a guide to the review, the label map is the correction)."""
    out: dict[tuple[str, int, int], str] = {}
    for e in entries if isinstance(entries, list) else [entries]:
        if (isinstance(e, list) and len(e) == 4 and e[0] in TYPE_VALUE and e[3] in REVIEW_STATUSES
                and all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in e[1:3])):
            out[(e[0], e[1], e[2])] = e[3]
        else:
            warnings.warn(f"{f}: review decision {e!r} is not [type, y, x, status]; passed over", stacklevel=2)
    return out


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def pixels_sha256(rgb: NDArray[np.uint8]) -> str:
    """The identity of a photo kept as its pixels: sha256 of its size and RGB bytes."""
    a = np.ascontiguousarray(rgb)
    h = hashlib.sha256(f"{a.shape[0]}x{a.shape[1]}x{a.shape[2]}:".encode())
    h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def _safe_id(name: str, legacy: bool = False) -> str:
    """A file-name-safe id from a name: letters and digits of any script (NFC), ``.``, ``-``;
    every other run of characters one ``_``; at most ``MAX_ID_BYTES``. ``legacy``: the rule
    before 2026-12-06, ASCII letters and digits only (a clinic's ``患者一/OD.jpg`` and
    ``患者二/OD.jpg`` became ``OD`` and ``OD-2``) and no limit, which lookups also try so that a
    project made then finds its photos; the two rules agree on ASCII names of up to
    ``MAX_ID_BYTES``."""
    s = re.sub(r"[^A-Za-z0-9._-]+" if legacy else r"[^\w.-]+", "_", unicodedata.normalize("NFC", name)).strip("._")
    if not s:
        raise LesionsegInputError(name, "cannot make an image id from this name")
    return s if legacy else _within_id_bytes(s)  # the old rule had no length limit either


MAX_ID_BYTES = 120  # in UTF-8; file names hold 255 bytes, and an id gets suffixes (-2, _fuzzy.png, .origin.json)


def _within_id_bytes(s: str) -> str:
    """``s``, or when longer than ``MAX_ID_BYTES`` (a clinic's long folder names, 3 bytes a
    CJK letter: "File name too long" at the first write) its start, a digest of the whole and
    its end (the photo's own name): the same name gives the same id, two names two ids."""
    if len(s.encode()) <= MAX_ID_BYTES:
        return s

    def fit(text: str, nbytes: int) -> str:
        out, used = [], 0
        for ch in text:
            used += len(ch.encode())
            if used > nbytes:
                break
            out.append(ch)
        return "".join(out)

    tail = fit(s[::-1], 40)[::-1]
    return f"{fit(s, MAX_ID_BYTES - 40 - 10)}_{hashlib.sha256(s.encode()).hexdigest()[:8]}_{tail}"


FOLDER_ID_DEPTH = 4  # a batch's subfolders an id may name (patient / visit / eye ...)


def _folder_name(folders: tuple[str, ...], stem: str, depth: int = FOLDER_ID_DEPTH) -> str:
    """``<folders>_<stem>`` from the last ``depth`` named folders (``p2/visit 2`` + ``OD``:
    ``p2_visit 2_OD``, made an id by ``_safe_id``); the stem alone when there are none."""
    named = [q for q in folders if q not in ("", ".", "..") and q != Path(q).anchor]
    return "_".join([*(named[-depth:] if depth else []), stem])


def _id_names(src: Path) -> list[str]:
    """The names a photo may have been given an id from: its stem, then a batch's
    ``<folders>_<stem>`` for the last one to ``FOLDER_ID_DEPTH`` folders above it."""
    return list(dict.fromkeys(_folder_name(src.parent.parts, src.stem, k) for k in range(FOLDER_ID_DEPTH + 1)))


class Project:
    """A project folder; created on first use, repaired on opening (see the module's text)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise LesionsegInputError(self.root, "a project must be a folder")
        try:
            for sub in ("images", "labels", "predictions", "models"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise LesionsegInputError(self.root, f"cannot be used as a project folder ({err.strerror or err})") from None
        self.recovered: list[LabelVersion] = []
        if os.access(self.root, os.W_OK):
            self._repair()

    # ---- locking ---------------------------------------------------------------------------
    def lock(self) -> contextlib.AbstractContextManager[None]:
        """Exclusive lock across processes (``<project>/.lock``)."""
        return file_lock(self.root / ".lock")

    def _repair(self) -> None:
        """Remove stale temp files; give versions saved without a manifest line (the saver was
        killed between the two writes) a line marked ``recovered``."""
        folders = [self.root / "images", self.root / "models", self.root]
        for sub in ("labels", "predictions"):
            with contextlib.suppress(OSError):
                folders += [d for d in (self.root / sub).iterdir() if d.is_dir()]
            folders.append(self.root / sub)
        for d in folders:
            remove_stale_temp(d)
        on_disk = {(v.image_id, v.version): v for iid in self._label_ids() for v in self.versions(iid)}
        if not on_disk:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            recorded = {(r.get("image_id"), r.get("version")) for r in self.manifest()}
        if set(on_disk) <= recorded:
            return
        with self.lock():
            recorded = {(r.get("image_id"), r.get("version")) for r in self.manifest()}
            for key in sorted(set(on_disk) - recorded):
                v = on_disk[key]
                try:
                    lab = read_label(v.path)
                except LesionsegInputError:
                    continue  # unreadable: never current, never used
                data = v.path.read_bytes()
                try:
                    types = self.label_types(v)
                except LesionsegInputError:
                    types = (HE,)
                self._append_manifest(self._record(v, lab, data, None, "saved before an interruption",
                                                   recovered=True, types=types))
                self.recovered.append(v)

    def _label_ids(self) -> list[str]:
        d = self.root / "labels"
        return sorted(f.name for f in d.iterdir() if f.is_dir() and not f.name.startswith(".")) if d.is_dir() else []

    # ---- images ----------------------------------------------------------------------------
    def add_image(self, path: str | os.PathLike[str], *, copy: bool = True, image_id: str | None = None,
                  readable: bool = False, folder: str | None = None) -> str:
        """Register a photo; returns its image id. Adding the same photo again returns the same
        id. Without ``image_id`` the id is the file stem, or, when a different photo already
        holds that stem (``IMG_0001.JPG`` from two cameras), the first of ``<stem>-2``,
        ``<stem>-3``, ... that is free or holds this photo; a given ``image_id`` that holds a
        different photo is refused. ``folder``: the subfolder of a batch the photo came from (a
        clinic's patient folders, ``p1/OD.jpg``, ``p2/OD.jpg``, ``p2/visit 2/OD.jpg``): the id
        is then the folder and stem (``p1_OD``, ``p2_OD``, ``p2_visit_2_OD``), not ``OD``,
        ``OD-2``, ``OD-3`` (which patient?). Either way a photo the project holds under the
        other form of its name keeps that id (:meth:`find_image`). The check and the write happen
        under the project's lock, so two processes adding different photos cannot take one id.
        ``readable``: the caller has just read the photo (a batch that segmented it), so it is
        not decoded again."""
        src = Path(path)
        own = self._own_image(src)
        if own is not None and image_id in (None, own):
            return own  # the project's own photo (`predict proj/images`): one kept as its pixels has their identity
        listed = src.suffix.lower() in IMAGE_SUFFIXES
        rgb = None if readable and listed else read_image(src)[0]  # refuse bad files before anything is written
        sha = _sha256_file(src)
        if copy and not listed:  # a format the project does not list (WebP, GIF, ...): kept as its pixels
            assert rgb is not None
            return self._add_png(rgb, src.stem, sha, src.name, image_id, src)
        with self.lock():
            held_id = None if image_id is not None else self._held_under_any(src, sha)
            if held_id is not None:
                return held_id
            base = _folder_name(PurePosixPath(folder or ".").parts, src.stem)  # as find_image looks for it
            iid, held = self._claim(base, sha, image_id, src)
            if held:
                return iid
            (self.root / "images" / f"{iid}{ORIGIN}").unlink(missing_ok=True)  # left by an interrupted add
            if copy:
                atomic_copy(src, self.root / "images" / f"{iid}{src.suffix.lower()}")
            else:
                atomic_write_text(self.root / "images" / f"{iid}.ref.json",
                                  json.dumps({"path": str(src.resolve()), "sha256": sha}))
        return iid

    def _own_image(self, src: Path) -> str | None:
        """The id of ``src`` when it is the file the project holds for that id (its own copy, or
        the file a reference names), else None."""
        held = self.image_path(src.stem)
        try:
            return src.stem if held is not None and held.resolve() == src.resolve() else None
        except OSError:
            return None

    def add_pixels(self, rgb: NDArray[np.uint8], name: str, *, image_id: str | None = None) -> str:
        """Register a photo the annotator sees in napari but no file of ours holds (a layer made
        in memory, or read by another plugin from a format we do not decode, e.g. DICOM): its
        pixels, as a lossless PNG. ``name`` gives the id as a file's stem does; the same pixels
        again give the same id (see :meth:`find_pixels`)."""
        a = np.asarray(rgb)
        if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
            raise LesionsegInputError(None, f"{name}: a photo's pixels must be RGB uint8, got {a.dtype} {a.shape}")
        return self._add_png(a, name, pixels_sha256(a), f"napari layer {name!r}", image_id)

    def find_pixels(self, rgb: NDArray[np.uint8], name: str) -> str | None:
        """The id under which :meth:`add_pixels` kept these pixels with this ``name``, or None."""
        return self._held_as(name, pixels_sha256(np.asarray(rgb)))

    def _add_png(self, rgb: NDArray[np.uint8], stem: str, sha: str, origin: str, image_id: str | None,
                 src: Path | None = None) -> str:
        with self.lock():
            iid, held = self._claim(stem, sha, image_id, src)
            if held:
                return iid  # nothing encoded for a photo the project holds already
            d = self.root / "images"
            # the identity first: a PNG without it would be identified by its own bytes
            atomic_write_text(d / f"{iid}{ORIGIN}", json.dumps({"origin": origin, "sha256": sha}))
            atomic_write_bytes(d / f"{iid}.png", encode_png(np.ascontiguousarray(rgb)))
        return iid

    def _claim(self, stem: str, sha: str, image_id: str | None, src: Path | None) -> tuple[str, bool]:
        """(under the lock) The id for content ``sha``: the given ``image_id`` (refused when it
        holds other content), else as :meth:`_id_for`; True when it already holds this content."""
        if image_id is None:
            return self._id_for(stem, sha)
        iid = _safe_id(image_id)
        if self.image_path(iid) is None:
            return iid, False
        if self.image_sha256(iid) != sha:
            raise LesionsegInputError(src, f"the project already holds a different image with id {iid!r}")
        return iid, True

    def _id_for(self, name: str, sha: str) -> tuple[str, bool]:
        """The id that holds this content among ``<stem>``, ``<stem>-2``, ... (True), by today's
        rule or, in a project made before, by the old ASCII one (``_safe_id``); else the first
        free one of today's (False)."""
        stem = _safe_id(name)
        iid, held = self._scan(stem, sha)
        if not held:
            try:
                old = _safe_id(name, legacy=True)
                found = self._scan(old, sha) if old != stem else (iid, False)
            except (LesionsegInputError, OSError):  # no ASCII letter in it, or too long for a file: never held
                found = (iid, False)
            if found[1]:
                return found
        return iid, held

    def _scan(self, stem: str, sha: str) -> tuple[str, bool]:
        """The id among ``<stem>``, ``<stem>-2``, ... holding content ``sha`` (True), else the
        first free one (False)."""
        for k in itertools.count(1):
            iid = stem if k == 1 else f"{stem}-{k}"
            if self.image_path(iid) is None:
                return iid, False
            try:
                if self.image_sha256(iid) == sha:
                    return iid, True
            except (OSError, LesionsegInputError):  # a reference whose photo is gone: not this one
                continue
        raise AssertionError("unreachable")

    def _held_as(self, name: str, sha: str) -> str | None:
        """The id among ``<name>``, ``<name>-2``, ... that holds content ``sha`` (``_id_for``), or None."""
        try:
            iid, held = self._id_for(name, sha)
        except (OSError, LesionsegInputError):  # a name no id can be made of
            return None
        return iid if held else None

    def find_image(self, path: str | os.PathLike[str]) -> str | None:
        """The id under which this photo (same content, its name stem or ``<stem>-<k>``, or as
        a batch from its folder names it, ``<folder>_<stem>``) is in the project, or None."""
        src = Path(path)
        own = self._own_image(src)
        if own is not None:
            return own
        try:
            return self._held_under_any(src, _sha256_file(src))
        except OSError:
            return None

    def _held_under_any(self, src: Path, sha: str) -> str | None:
        """The id holding content ``sha`` under any name ``src`` may have been given: its stem
        (and ``<stem>-<k>``), or a batch's folder-and-stem for up to the last four folders above
        it (``p2_OD``, ``p2_visit_2_OD``)."""
        for name in _id_names(src):
            if (held := self._held_as(name, sha)) is not None:
                return held
        return None

    def image_ids(self) -> list[str]:
        ids = set()
        for f in (self.root / "images").iterdir():
            if is_temp_file(f) or f.name.startswith("."):
                continue
            if f.name.endswith(".ref.json"):
                ids.add(f.name[: -len(".ref.json")])
            elif f.suffix.lower() in IMAGE_SUFFIXES:
                ids.add(f.stem)
        return sorted(ids)

    def image_path(self, image_id: str) -> Path | None:
        d = self.root / "images"
        ref = d / f"{image_id}.ref.json"
        if ref.exists():
            return Path(self._ref(ref)["path"])
        for suf in IMAGE_SUFFIXES:
            p = d / f"{image_id}{suf}"
            if p.exists():
                return p
        return None

    def image_sha256(self, image_id: str) -> str:
        """What identifies the photo: its file's sha256 (a reference's recorded one; for a photo
        kept as its pixels, the sha256 its ``.origin.json`` holds)."""
        ref = self.root / "images" / f"{image_id}.ref.json"
        if ref.exists():
            return self._ref(ref)["sha256"]
        origin = self.root / "images" / f"{image_id}{ORIGIN}"
        if origin.exists() and (self.root / "images" / f"{image_id}.png").exists():
            raw = read_json(origin)
            if not isinstance(raw.get("sha256"), str):
                raise LesionsegInputError(origin, "lacks the sha256 that identifies the photo")
            return raw["sha256"]
        p = self.image_path(image_id)
        if p is None:
            raise LesionsegInputError(self.root / "images", f"no image with id {image_id!r}")
        return _sha256_file(p)

    @staticmethod
    def _ref(path: Path) -> dict[str, str]:
        data = read_json(path)
        if not (isinstance(data.get("path"), str) and isinstance(data.get("sha256"), str)):
            raise LesionsegInputError(path, "image reference lacks its path or sha256")
        return data

    # ---- labels ----------------------------------------------------------------------------
    def versions(self, image_id: str) -> list[LabelVersion]:
        d = self.root / "labels" / image_id
        if not d.is_dir():
            return []
        out = []
        for f in d.iterdir():
            m = VERSION_RE.match(f.name)
            if m:
                out.append(LabelVersion(image_id, int(m.group(1)), f))
        return sorted(out, key=lambda v: v.version)

    def latest_with_label(self, image_id: str) -> tuple[LabelVersion, NDArray[np.uint8]] | None:
        """The current version (the highest that reads) and its label map, read once."""
        for v in reversed(self.versions(image_id)):
            try:
                return v, read_label(v.path)
            except LesionsegInputError:
                warnings.warn(f"{v.path}: unreadable label version skipped", stacklevel=3)
        return None

    def latest(self, image_id: str) -> LabelVersion | None:
        """The current version: the highest that reads."""
        hit = self.latest_with_label(image_id)
        return None if hit is None else hit[0]

    def latest_label(self, image_id: str) -> NDArray[np.uint8] | None:
        """The current version's label map, exactly as saved (0, 1, 255)."""
        hit = self.latest_with_label(image_id)
        return None if hit is None else hit[1]

    # ---- drafts: unsaved hand edits, kept against a crash -------------------------------------
    def _draft_paths(self, image_id: str) -> tuple[Path, Path]:
        d = self.root / DRAFTS
        return d / f"{image_id}.png", d / f"{image_id}.json"

    def save_draft(self, image_id: str, label: NDArray, base_version: int | None, *, edited: bool = True,
                   marks: Mapping[tuple[str, int, int], str] | None = None,
                   types: Collection[str] | None = None) -> None:
        """Keep ``label`` (a label map as :meth:`save_label` takes it), the photo's hand edits not
        yet saved, made on version ``base_version`` (None: on no version); one draft per photo,
        replaced by the next. Not a version: the queue and fine-tuning never see it. With it the
        Review dock's decisions not yet saved (``marks``, as :meth:`save_label` takes them; an
        Accept paints nothing, so they are kept apart from the pixels) and the lesion types
        ticked as reviewed (``types``); ``edited``: whether ``label`` differs from what it was
        made on (False: a draft of decisions only)."""
        lab = check_label_values(label)
        png, meta = self._draft_paths(image_id)
        png.parent.mkdir(parents=True, exist_ok=True)
        record: dict[str, Any] = {"base_version": base_version, "shape": list(lab.shape), "edited": bool(edited),
                                  "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        if marks is not None:
            record["review"] = _review_entries(marks, lab.shape)
        if types is not None:
            record["types"] = [t for t in LESION_TYPES if t in set(types)]
        atomic_write_bytes(png, encode_png(lab))
        atomic_write_text(meta, json_text(record))

    def draft(self, image_id: str) -> Draft | None:
        """The photo's draft (:class:`Draft`), or None (none, or unreadable: a warning; it is left
        on disk for a person to look at)."""
        png, meta = self._draft_paths(image_id)
        if not png.is_file() or not meta.is_file():
            return None
        try:
            info = read_json(meta)
            lab = read_label(png)
            base = info.get("base_version")
            if (base is not None and not isinstance(base, int)) or list(lab.shape) != info.get("shape"):
                raise LesionsegInputError(png, "the draft does not match its record")
            types = info.get("types")
            if types is not None and (not isinstance(types, list) or not set(types) <= set(LESION_TYPES)):
                raise LesionsegInputError(meta, f"its types {types!r} are not lesion types of {list(LESION_TYPES)}")
            return Draft(lab, base, _local_time(str(info.get("saved_at", ""))), bool(info.get("edited", True)),
                         None if "review" not in info else _parse_review(info["review"], meta),
                         None if types is None else tuple(types))
        except (LesionsegInputError, OSError, AttributeError) as err:
            warnings.warn(f"{png}: an unreadable draft of unsaved edits was not restored ({err})", stacklevel=2)
            return None

    def current_draft(self, image_id: str, version: int | None) -> Draft | None:
        """The photo's draft if it was made on ``version`` (the photo's current one; None: none
        saved; its ``kept_at`` never empty). One made on another version is stale (those edits
        were saved, or given up) and is dropped (left, and passed over again, where the project
        is read-only)."""
        found = self.draft(image_id)
        if found is None:
            return None
        if found.base_version == version:
            return found if found.kept_at else replace(found, kept_at="an earlier sitting")
        with contextlib.suppress(OSError):
            self.drop_draft(image_id)
        return None

    def drop_draft(self, image_id: str) -> None:
        """Remove the photo's draft (its edits were saved as a version, or undone)."""
        for path in self._draft_paths(image_id):
            path.unlink(missing_ok=True)

    def save_label(self, image_id: str, label: NDArray, *, model_version: str | None = None,
                   model_mask: NDArray | None = None, note: str = "",
                   types: list[str] | tuple[str, ...] = (HE,),
                   marks: Mapping[tuple[str, int, int], str] | None = None) -> LabelVersion:
        """Append a new label version (never overwriting one) and its manifest line. Values
        must be exactly 0, a lesion type's value or 255 (checked before any conversion).
        ``types``: the lesion types the annotator reviewed on this photo; for the others the
        version says nothing (fine-tuning treats them as unknown, never as "none"). ``marks``:
        the Review dock's decisions, (lesion type, y, x) -> status (:meth:`review_marks`)."""
        lab = check_label_values(label)
        review = _review_entries(marks, lab.shape)
        types = tuple(t for t in LESION_TYPES if t in set(types))
        if not types:
            raise LesionsegInputError(None, "a correction must be reviewed for at least one lesion type")
        if self.image_path(image_id) is None:
            raise LesionsegInputError(self.root / "images", f"no image with id {image_id!r}; add it first")
        d = self.root / "labels" / image_id
        d.mkdir(parents=True, exist_ok=True)
        data = encode_png(lab)
        with self.lock():
            prev = self.versions(image_id)
            version = (prev[-1].version + 1) if prev else 1
            target = d / f"v{version:04d}.png"
            if types != (HE,) or review:  # written first: a version never exists without its types
                extra = {"review": review} if review else {}
                atomic_write_text(target.with_suffix(".json"), json_text({"types": list(types), **extra}))
            else:  # a save killed between its json and its png left the json: not this version's
                target.with_suffix(".json").unlink(missing_ok=True)
            create_new(target, data)  # fails if target exists: never overwrite a version
            atomic_write_text(d / "latest.json", json.dumps({"version": version, "file": target.name}))
            v = LabelVersion(image_id, version, target)
            record = self._record(v, lab, data, model_mask, note, model_version, types=types)
            if review:
                record["review_decisions"] = len(review)
            self._append_manifest(record)
        return v

    def label_types(self, v: LabelVersion) -> tuple[str, ...]:
        """The lesion types version ``v`` was reviewed for (HE only for versions without a
        types file: every version saved before other types existed)."""
        f = v.path.with_suffix(".json")
        if not f.exists():
            return (HE,)
        raw = read_json(f)
        types = raw.get("types") if isinstance(raw, dict) else None
        if not isinstance(types, list) or not types or not set(types) <= set(LESION_TYPES):
            raise LesionsegInputError(f, f"must hold {{\"types\": [...]}} naming lesion types of {list(LESION_TYPES)}")
        return tuple(types)

    def review_marks(self, v: LabelVersion) -> dict[tuple[str, int, int], str]:
        """The Review dock's decisions saved with version ``v``: (lesion type, y, x) -> "accepted",
        "deleted" or "unsure", kept at a pixel of each region decided (the dock shows one while
        that pixel still holds what the decision left), so a photo reviewed yesterday lists the
        regions decided then as decided. A damaged entry is passed over with a warning: the
        decisions are a guide to the review, the label map is the correction."""
        f = v.path.with_suffix(".json")
        if not f.exists():
            return {}
        raw = read_json(f)
        return _parse_review(raw.get("review", []) if isinstance(raw, dict) else [], f)

    def _record(self, v: LabelVersion, lab: NDArray[np.uint8], data: bytes, model_mask: NDArray | None,
                note: str, model_version: str | None = None, recovered: bool = False,
                types: tuple[str, ...] = (HE,)) -> dict[str, Any]:
        record: dict[str, Any] = {
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "image_id": v.image_id, "image_sha256": self.image_sha256(v.image_id) if self.image_path(v.image_id) else None,
            "version": v.version, "file": v.path.relative_to(self.root).as_posix(),
            "label_sha256": hashlib.sha256(data).hexdigest(),
            "model_version": model_version, "lesion_px": int((lab == 1).sum()),
            "unsure_px": int((lab == 255).sum()), "note": note, "types": list(types),
        }
        for t in types[1:] if types[0] == HE else types:
            record[f"{t}_px"] = int((lab == TYPE_VALUE[t]).sum())
        if recovered:
            record["recovered"] = True
        if model_mask is not None:
            mm = np.asarray(model_mask) > 0
            record["edited_px"] = int(np.count_nonzero(mm != (lab == 1)))
            record["dice_model_vs_corrected"] = scores(confusion(mm, lab == 1, lab != 255))["dice"]
        return record

    # ---- manifest --------------------------------------------------------------------------
    def _append_manifest(self, record: dict[str, Any]) -> None:
        path = self.root / MANIFEST
        line = (json_text(record) + "\n").encode()
        with open(path, "ab") as fh:
            # a torn previous line (crash mid-append) must not swallow this record
            if fh.tell() > 0:
                with open(path, "rb") as rf:
                    rf.seek(-1, os.SEEK_END)
                    if rf.read(1) != b"\n":
                        fh.write(b"\n")
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())

    def manifest(self) -> list[dict[str, Any]]:
        """All manifest records; unparseable lines (a torn last write) are skipped with a warning."""
        path = self.root / MANIFEST
        if not path.exists():
            return []
        out = []
        for i, line in enumerate(path.read_bytes().splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = parse_json(line.decode("utf-8"), path)
                if not isinstance(rec, dict):
                    raise LesionsegInputError(path, "not an object")
                out.append(rec)
            except (LesionsegInputError, UnicodeDecodeError):
                warnings.warn(f"{path}: line {i} is damaged (interrupted write?) and was skipped", stacklevel=2)
        return out

    # ---- where a review resumes ----------------------------------------------------------------
    def set_resume(self, image_ids: list[str]) -> None:
        """Remember the photos under review (``resume.json``, written as *Open next image* opens
        one): a review opened again starts at them, not at the most uncertain photo without a
        correction, which passed over a photo left half-reviewed (its edits saved on closing
        napari) until every other was done."""
        atomic_write_text(self.root / RESUME, json.dumps({"open": list(image_ids)}))

    def resume_ids(self) -> list[str]:
        """The photos :meth:`set_resume` remembered that the project still holds (none when the
        file is missing or damaged: it is a convenience, never an error)."""
        with contextlib.suppress(LesionsegInputError, OSError):
            raw = read_json(self.root / RESUME)
            ids = raw.get("open") if isinstance(raw, dict) else None
            if isinstance(ids, list):
                held = set(self.image_ids())
                return [i for i in ids if isinstance(i, str) and i in held]
        return []

    # ---- for fine-tuning ---------------------------------------------------------------------
    def corrected_pairs(self, read: bool = True) -> list[Pair]:
        """``(image, latest label)`` for every image with at least one saved correction.
        ``read=False``: the highest version is taken as the latest without reading it (a
        count for display: a damaged highest version is passed over only when read)."""
        pairs = []
        for iid in self.image_ids():
            v = self.latest(iid) if read else next(reversed(self.versions(iid)), None)
            img = self.image_path(iid)
            if v is not None and img is not None:
                pairs.append(Pair(iid, img, v.path, label_map=True, label_types=self.label_types(v)))
        return pairs

    def prediction_dir(self, model_version: str) -> Path:
        return self.root / "predictions" / _safe_id(model_version)

    # ---- predictions (to order the review by uncertainty) -----------------------------------
    def save_prediction(self, image_id: str, model_version: str, prob: NDArray, mask: NDArray,
                        fuzzy: NDArray, settings: dict[str, Any] | None = None,
                        others: dict[str, tuple[NDArray, NDArray, float]] | None = None) -> Path:
        """``predictions/<model>/<id>_{prob,mask,fuzzy}.png`` and ``<id>.json`` (uncertainty
        summary, and ``settings``: the model's threshold and review config, for the queue);
        ``others``: each other output's ``(probability, mask, threshold)``, as
        ``<id>_<T>_{prob,mask}.png`` with its threshold under ``types`` in the json (a photo
        opened from the project again is reviewed by type and shows every type's mask)."""
        d = self.prediction_dir(model_version)
        write_maps(d, image_id, prob, mask, fuzzy)
        for name, (p, m, _thr) in (others or {}).items():
            write_maps(d, f"{image_id}_{name}", p, m, None)
        f = np.asarray(fuzzy) > 0.5
        lit = np.asarray(prob) > 0
        summary = {"image_id": image_id, "model_version": model_version,
                   "fuzzy_fraction": float(f.sum() / max(int(lit.sum()), 1)),
                   "mean_fuzzy": float(np.asarray(fuzzy)[lit].mean()) if lit.any() else 0.0,
                   "lesion_px": int((np.asarray(mask) > 0).sum()), **(settings or {})}
        if others:
            summary["types"] = {name: float(thr) for name, (_p, _m, thr) in others.items()}
        atomic_write_text(d / f"{image_id}.json", json_text(summary))
        return d

    def prediction_map(self, image_id: str, kind: str) -> NDArray[np.float32] | None:
        """One map (``prob``, ``fuzzy`` or ``mask``) of the image's latest stored prediction, as
        floats in [0, 1]; None when there is none or it does not read."""
        d = self.latest_prediction(image_id)
        if d is None:
            return None
        try:
            return read_unit_map(d / f"{image_id}_{kind}.png")
        except LesionsegInputError:
            return None

    def prediction_types(self, image_id: str, *, probabilities: bool = True
                         ) -> dict[str, tuple[NDArray[np.float32] | None, NDArray[np.uint8], float]]:
        """The other outputs stored with the image's latest prediction, by type:
        ``(probability, 0/1 mask, threshold)`` (the probability None unless ``probabilities``:
        a full-size PNG each, not decoded for nothing); types whose maps do not read are left out."""
        d = self.latest_prediction(image_id)
        if d is None:
            return {}
        try:
            types = read_json(d / f"{image_id}.json").get("types") or {}
        except (LesionsegInputError, OSError):
            return {}
        out: dict[str, tuple[NDArray[np.float32] | None, NDArray[np.uint8], float]] = {}
        for name, thr in (types.items() if isinstance(types, dict) else []):
            if name not in OUTPUT_TYPES or name == HE:  # names become file names: known ones only
                continue
            with contextlib.suppress(LesionsegInputError, OSError, TypeError, ValueError):
                p = read_unit_map(d / f"{image_id}_{name}_prob.png") if probabilities else None
                m = (read_unit_map(d / f"{image_id}_{name}_mask.png") > 0.5).view(np.uint8)
                out[str(name)] = (p, m, float(thr))
        return out

    def prediction_settings(self, image_id: str) -> dict[str, Any]:
        """The model that made the image's latest prediction (``model_version``), its threshold,
        review config, disc/fovea (``anatomy``) and the other outputs' thresholds by type
        (``types``) (each absent for predictions saved before it was, or without other outputs)."""
        d = self.latest_prediction(image_id)
        if d is None:
            return {}
        with contextlib.suppress(LesionsegInputError, TypeError, ValueError, OSError):
            raw = read_json(d / f"{image_id}.json")
            return {k: raw[k] for k in ("model_version", "threshold", "review", "anatomy", "types") if k in raw}
        return {}

    def latest_prediction(self, image_id: str) -> Path | None:
        """The newest predictions folder holding this image."""
        hits = [d for d in (self.root / "predictions").iterdir() if (d / f"{image_id}.json").exists()]
        return max(hits, key=lambda d: (d / f"{image_id}.json").stat().st_mtime) if hits else None

    def images_by_uncertainty(self) -> list[tuple[str, float | None]]:
        """Image ids, most uncertain first (the mean fuzzy value over the disc of their latest
        prediction: with an ``error_rate`` map, the expected share of wrong pixels); images never
        segmented come last (``None``)."""
        out: list[tuple[str, float | None]] = []
        for iid in self.image_ids():
            d = self.latest_prediction(iid)
            score = None
            if d is not None:
                with contextlib.suppress(LesionsegInputError, TypeError, ValueError, KeyError):
                    score = float(read_json(d / f"{iid}.json")["mean_fuzzy"])
            out.append((iid, score))
        return sorted(out, key=lambda t: (t[1] is None, -(t[1] or 0.0), t[0]))
