"""A training run's folder (``lesionseg train --out RUN``) before a run writes in it: a new run
never writes over an earlier one (hours of training, its best model, its log), and ``--resume``
continues a run only with the recipe it started with, which ``RUN/config.json`` holds. Between
sittings only the budget, the machine's settings and where the data lie may change."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from napari_lesionseg.core.dataclass_io import ConfigError, from_dict, to_dict
from napari_lesionseg.core.errors import LesionsegInputError

from .train_config import TrainConfig

STATE = "state.pt"
CONFIG = "config.json"
# what a resumed run may change: its budget, how it logs, the machine it runs on, where the data lie
RESUMABLE = frozenset({
    "run.steps", "run.minutes", "run.eval_every", "run.state_every", "run.log_every", "run.threads",
    "run.device", "run.amp", "data.images", "data.masks", "data.cache_dir", "data.pseudo_labels",
    "data.unlabelled", "data.unlabelled_not_like",
})

# the order differences are named in: the network first (it cannot be resumed at all), the budget last
SECTION_ORDER = ("model", "paradigm", "adversary", "loss", "optim", "data", "run")


def reached_step(run: Path) -> int | None:
    """The last step the run's event log records (None: no step logged)."""
    try:
        lines = (run / "events.jsonl").read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            step = json.loads(line).get("step")
        except (ValueError, AttributeError):
            continue
        if isinstance(step, int):
            return step
    return None


def require_state(run: Path) -> None:
    """A clear error unless ``run`` holds a run's resume state."""
    run = Path(run)
    if run.exists() and not run.is_dir():
        raise LesionsegInputError(run, "is a file, not a run folder (--out names the folder a run writes)")
    if not (run / STATE).exists():
        step = reached_step(run)
        raise LesionsegInputError(run, f"holds no training run to resume (no {STATE}"
                                       f"{': the run stopped before its first save' if step is not None else ''}); "
                                       "leave out --resume to start one")


def saved_config(run: Path) -> dict[str, Any]:
    """``RUN/config.json``, the recipe the run started with, as a dict (a clear error when the
    run has no resume state, or the file is missing or unreadable)."""
    require_state(run)
    path = Path(run) / CONFIG
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LesionsegInputError(path, "missing: the run's recipe is unknown, so it cannot be resumed") from None
    except (OSError, ValueError) as err:
        raise LesionsegInputError(path, f"unreadable ({err}): the run cannot be resumed") from None
    if not isinstance(data, dict):
        raise LesionsegInputError(path, "not a training config (expected a JSON object)")
    return data


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in data.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def recipe_changes(run: Path, cfg: TrainConfig) -> list[str]:
    """The config keys in which ``cfg`` differs from the run's own recipe, beyond what a resumed
    run may change (``RESUMABLE``), in ``SECTION_ORDER``."""
    path = run / CONFIG
    try:
        before = to_dict(from_dict(TrainConfig, saved_config(run)))  # the defaults of keys it predates filled in
    except ConfigError as err:
        raise LesionsegInputError(path, f"not a config this version reads ({err})") from None
    old, new = _flat(before), _flat(to_dict(cfg))
    changed = [k for k in old.keys() | new.keys() if old.get(k) != new.get(k) and k not in RESUMABLE]
    return sorted(changed, key=lambda k: (SECTION_ORDER.index(k.split(".")[0]) if k.split(".")[0] in SECTION_ORDER
                                          else len(SECTION_ORDER), k))


def check_run_folder(run: Path, cfg: TrainConfig, resume: bool) -> None:
    """Raise ``LesionsegInputError`` when a run with ``cfg`` must not write in ``run``: a new run
    (``resume`` False) where a run already is; a resume where there is none, or with another recipe."""
    run = Path(run)
    if not resume:
        if run.exists() and not run.is_dir():
            raise LesionsegInputError(run, "is a file, not a run folder (--out names the folder a run writes)")
        if any((run / name).exists() for name in (STATE, "best", "last")):
            step = reached_step(run)
            held = f" (its log reaches step {step})" if step is not None else ""
            raise LesionsegInputError(run, f"holds a training run{held}: --resume continues it, another --out "
                                           "starts a new one (nothing was changed)")
        return
    require_state(run)
    changed = recipe_changes(run, cfg)
    if changed:
        shown = ", ".join(changed[:6]) + (f" and {len(changed) - 6} more" if len(changed) > 6 else "")
        raise LesionsegInputError(run / CONFIG, f"--resume continues the run's own recipe, but the config given "
                                                f"differs in {shown}; leave out --config to continue it as it "
                                                "started (--steps, --minutes and where the data lie may change), "
                                                "or start a new run in another --out")
