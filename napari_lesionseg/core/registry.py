"""Model versions of a project (``<project>/models/<version>/``) and which one is active.

``active.json`` names the active version; promoting writes it atomically. Discarding moves a
version into ``models/.discarded/`` rather than deleting it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from .atomic import atomic_write_text
from .bundled import default_model_dir
from .errors import LesionsegInputError
from .model_folder import CONFIG, WEIGHTS

ACTIVE = "active.json"


class Registry:
    def __init__(self, project_root: str | os.PathLike[str]) -> None:
        self.dir = Path(project_root) / "models"
        self.dir.mkdir(parents=True, exist_ok=True)

    def versions(self) -> list[str]:
        """Version names with a complete model folder, oldest first."""
        out = [p for p in self.dir.iterdir() if p.is_dir() and not p.name.startswith(".")
               and not p.name.endswith(".run") and (p / CONFIG).exists() and (p / WEIGHTS).exists()]
        return [p.name for p in sorted(out, key=lambda p: (p.stat().st_mtime, p.name))]

    def incomplete(self) -> dict[str, list[str]]:
        """Folders in ``models/`` that are no version (a model folder copied in part): name ->
        the files missing (a fine-tune's run folder, hidden or ``.run``, is not listed)."""
        out = {}
        for p in sorted(self.dir.iterdir()):
            if p.is_dir() and not p.name.startswith(".") and not p.name.endswith(".run"):
                missing = [f for f in (CONFIG, WEIGHTS) if not (p / f).exists()]
                if missing:
                    out[p.name] = missing
        return out

    def path(self, version: str) -> Path:
        p = self.dir / version
        if version not in self.versions():
            if missing := self.incomplete().get(version):
                raise LesionsegInputError(p, f"not a complete model folder (no {' or '.join(missing)}): copy the "
                                             "whole folder a training or fine-tune wrote")
            raise LesionsegInputError(p, "no such model version in this project")
        return p

    def new_version_path(self, base: str = "finetuned") -> Path:
        """A fresh, unused folder name: ``<base>-YYYYmmdd-HHMMSS[-n]``."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        p = self.dir / f"{base}-{stamp}"
        n = 1
        while p.exists():
            n += 1
            p = self.dir / f"{base}-{stamp}-{n}"
        return p

    def active(self) -> Path:
        """The active model folder (the shipped default when none was promoted)."""
        return self.promoted() or default_model_dir()

    def promoted(self) -> Path | None:
        """The version promoted to active, None when none was (or it is gone)."""
        name = self._named_active()
        return self.dir / name if name is not None and name in self.versions() else None

    def _named_active(self) -> str | None:
        """The version ``active.json`` names (None: no file, none promoted, or unreadable)."""
        f = self.dir / ACTIVE
        try:
            name = json.loads(f.read_text())["version"] if f.exists() else None
        except (ValueError, KeyError, OSError, TypeError):
            return None
        return name if isinstance(name, str) else None

    def missing_note(self) -> str:
        """A sentence when the version ``active.json`` names is gone from ``models/`` (moved or
        deleted by hand: the project then runs the shipped default, which is worth saying), else ''."""
        name = self._named_active()
        if name is None or name in self.versions():
            return ""
        return (f"the project's active model '{name}' is no longer in {self.dir} (moved or deleted?): the shipped "
                "default model is used instead; put it back, or make another version active")

    def promote(self, version: str) -> Path:
        p = self.path(version)
        atomic_write_text(self.dir / ACTIVE, json.dumps({"version": version, "time": time.time()}))
        return p

    def use_default(self) -> None:
        atomic_write_text(self.dir / ACTIVE, json.dumps({"version": None, "time": time.time()}))

    def discard(self, version: str) -> Path:
        p = self.path(version)
        if self.active() == p:
            raise LesionsegInputError(p, "is the active model; make another version active first")
        dest = self.dir / ".discarded" / version
        dest.parent.mkdir(exist_ok=True)
        os.replace(p, dest)
        return dest
