"""The corrections store: a project folder the annotator's work lives in (ARCHITECTURE.md 4).

```
<project>/images/<image_id>.<ext>          copied source photo (or <image_id>.ref.json: path + sha256)
<project>/labels/<image_id>/v0001.png ...  append-only label versions (0 bg, 1 lesion, 255 unsure)
<project>/labels/<image_id>/latest.json    which version is current
<project>/manifest.jsonl                   one line per save (provenance)
<project>/predictions/<model>/<image_id>_{prob,mask,fuzzy}.png
<project>/models/<version>/                model folders (see model_folder.py)
```
A version file is created with ``os.link`` from a fsynced temp file, which fails rather than
replace an existing file: no version is ever overwritten, even by two processes racing. A lock
file serialises saves. ``latest.json`` is only a hint: readers fall back to the highest version
that reads. A torn last manifest line (a crash mid-append) is skipped with a warning.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .atomic import atomic_open as open_atomic
from .atomic import atomic_write_text, fsync_dir, is_temp_file, make_ordinary
from .errors import LesionsegInputError
from .image_io import IMAGE_SUFFIXES, encode_png, read_image, read_mask
from .metrics import confusion, scores
from .pairs import Pair

VERSION_RE = re.compile(r"^v(\d{4,})\.png$")
MANIFEST = "manifest.jsonl"


@dataclass(frozen=True)
class LabelVersion:
    image_id: str
    version: int
    path: Path


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _safe_id(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    if not s:
        raise LesionsegInputError(name, "cannot make an image id from this name")
    return s


class Project:
    """A project folder; created on first use."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise LesionsegInputError(self.root, "a project must be a folder")
        for sub in ("images", "labels", "predictions", "models"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    # ---- locking ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive lock across processes (``<project>/.lock``, flock)."""
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    # ---- images ----------------------------------------------------------------------------
    def add_image(self, path: str | os.PathLike[str], *, copy: bool = True, image_id: str | None = None) -> str:
        """Register a photo; returns its image id (the file stem unless given). Adding the same
        photo again returns the same id; a different photo under a taken id is refused."""
        src = Path(path)
        read_image(src)  # refuse bad files before anything is written
        iid = _safe_id(image_id or src.stem)
        sha = _sha256_file(src)
        existing = self.image_path(iid)
        if existing is not None:
            if self.image_sha256(iid) != sha:
                raise LesionsegInputError(src, f"the project already holds a different image with id {iid!r}")
            return iid
        with self.lock():
            if copy:
                dst = self.root / "images" / f"{iid}{src.suffix.lower()}"
                fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
                os.close(fd)
                make_ordinary(tmp)
                shutil.copyfile(src, tmp)
                with open(tmp, "rb+") as fh:
                    os.fsync(fh.fileno())
                os.replace(tmp, dst)
            else:
                atomic_write_text(self.root / "images" / f"{iid}.ref.json",
                                  json.dumps({"path": str(src.resolve()), "sha256": sha}))
            fsync_dir(self.root / "images")
        return iid

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
            return Path(json.loads(ref.read_text())["path"])
        for suf in IMAGE_SUFFIXES:
            p = d / f"{image_id}{suf}"
            if p.exists():
                return p
        return None

    def image_sha256(self, image_id: str) -> str:
        ref = self.root / "images" / f"{image_id}.ref.json"
        if ref.exists():
            return str(json.loads(ref.read_text())["sha256"])
        p = self.image_path(image_id)
        if p is None:
            raise LesionsegInputError(self.root / "images", f"no image with id {image_id!r}")
        return _sha256_file(p)

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

    def latest(self, image_id: str) -> LabelVersion | None:
        """The current version: what latest.json names, else the highest version that reads."""
        d = self.root / "labels" / image_id
        hint = d / "latest.json"
        with contextlib.suppress(OSError, ValueError, KeyError):
            v = int(json.loads(hint.read_text())["version"])
            p = d / f"v{v:04d}.png"
            if p.exists():
                return LabelVersion(image_id, v, p)
        for v in reversed(self.versions(image_id)):
            try:
                read_mask(v.path)
                return v
            except LesionsegInputError:
                warnings.warn(f"{v.path}: unreadable label version skipped", stacklevel=2)
        return None

    def latest_label(self, image_id: str) -> NDArray[np.uint8] | None:
        v = self.latest(image_id)
        return None if v is None else read_mask(v.path)

    def save_label(self, image_id: str, label: NDArray, *, model_version: str | None = None,
                   model_mask: NDArray | None = None, note: str = "") -> LabelVersion:
        """Append a new label version (never overwriting one) and its manifest line."""
        lab = np.asarray(label)
        if lab.ndim != 2:
            raise LesionsegInputError(None, f"a label map must be 2-D, got shape {lab.shape}")
        lab = lab.astype(np.uint8)
        bad = set(np.unique(lab).tolist()) - {0, 1, 255}
        if bad:
            raise LesionsegInputError(None, f"label values must be 0, 1 or 255 (unsure); found {sorted(bad)[:5]}")
        if self.image_path(image_id) is None:
            raise LesionsegInputError(self.root / "images", f"no image with id {image_id!r}; add it first")
        d = self.root / "labels" / image_id
        d.mkdir(parents=True, exist_ok=True)
        data = encode_png(lab)
        with self.lock():
            prev = self.versions(image_id)
            version = (prev[-1].version + 1) if prev else 1
            target = d / f"v{version:04d}.png"
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=d)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    make_ordinary(fh.fileno())
                    os.fsync(fh.fileno())
                os.link(tmp, target)  # fails if target exists: never overwrite a version
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            fsync_dir(d)
            atomic_write_text(d / "latest.json", json.dumps({"version": version, "file": target.name}))
            record: dict[str, Any] = {
                "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "image_id": image_id, "image_sha256": self.image_sha256(image_id),
                "version": version, "file": str(target.relative_to(self.root)),
                "label_sha256": hashlib.sha256(data).hexdigest(),
                "model_version": model_version, "lesion_px": int((lab == 1).sum()),
                "unsure_px": int((lab == 255).sum()), "note": note,
            }
            if model_mask is not None:
                mm = np.asarray(model_mask) > 0
                record["edited_px"] = int(np.count_nonzero(mm != (lab == 1)))
                record["dice_model_vs_corrected"] = scores(confusion(mm, lab == 1, lab != 255))["dice"]
            self._append_manifest(record)
        return LabelVersion(image_id, version, target)

    # ---- manifest --------------------------------------------------------------------------
    def _append_manifest(self, record: dict[str, Any]) -> None:
        path = self.root / MANIFEST
        line = (json.dumps(record) + "\n").encode()
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
                out.append(json.loads(line))
            except (json.JSONDecodeError, UnicodeDecodeError):
                warnings.warn(f"{path}: line {i} is damaged (interrupted write?) and was skipped", stacklevel=2)
        return out

    # ---- for fine-tuning ---------------------------------------------------------------------
    def corrected_pairs(self) -> list[Pair]:
        """``(image, latest label)`` for every image with at least one saved correction."""
        pairs = []
        for iid in self.image_ids():
            v = self.latest(iid)
            img = self.image_path(iid)
            if v is not None and img is not None:
                pairs.append(Pair(iid, img, v.path))
        return pairs

    def prediction_dir(self, model_version: str) -> Path:
        return self.root / "predictions" / _safe_id(model_version)

    # ---- predictions (to order the review by uncertainty) -----------------------------------
    def save_prediction(self, image_id: str, model_version: str, prob: NDArray, mask: NDArray,
                        fuzzy: NDArray) -> Path:
        """``predictions/<model>/<id>_{prob,mask,fuzzy}.png`` and ``<id>.json`` (uncertainty summary)."""
        d = self.prediction_dir(model_version)
        d.mkdir(parents=True, exist_ok=True)
        to8 = lambda a: np.clip(np.rint(np.asarray(a, np.float32) * 255), 0, 255).astype(np.uint8)  # noqa: E731
        for kind, arr in (("prob", to8(prob)), ("mask", (np.asarray(mask) > 0).astype(np.uint8) * 255),
                          ("fuzzy", to8(fuzzy))):
            with open_atomic(d / f"{image_id}_{kind}.png") as fh:
                fh.write(encode_png(arr))
        f = np.asarray(fuzzy) > 0.5
        lit = np.asarray(prob) > 0
        summary = {"image_id": image_id, "model_version": model_version,
                   "fuzzy_fraction": float(f.sum() / max(int(lit.sum()), 1)),
                   "mean_fuzzy": float(np.asarray(fuzzy)[lit].mean()) if lit.any() else 0.0,
                   "lesion_px": int((np.asarray(mask) > 0).sum())}
        atomic_write_text(d / f"{image_id}.json", json.dumps(summary))
        return d

    def latest_prediction(self, image_id: str) -> Path | None:
        """The newest predictions folder holding this image."""
        hits = [d for d in (self.root / "predictions").iterdir() if (d / f"{image_id}.json").exists()]
        return max(hits, key=lambda d: (d / f"{image_id}.json").stat().st_mtime) if hits else None

    def images_by_uncertainty(self) -> list[tuple[str, float | None]]:
        """Image ids, most uncertain first (fuzzy fraction of their latest prediction); images
        never segmented come last (``None``)."""
        out: list[tuple[str, float | None]] = []
        for iid in self.image_ids():
            d = self.latest_prediction(iid)
            score = None
            if d is not None:
                with contextlib.suppress(OSError, ValueError, KeyError):
                    score = float(json.loads((d / f"{iid}.json").read_text())["fuzzy_fraction"])
            out.append((iid, score))
        return sorted(out, key=lambda t: (t[1] is None, -(t[1] or 0.0), t[0]))
