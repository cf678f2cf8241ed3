"""The "Fine-tune model" dock widget: one click fine-tunes the active model on the project's
saved corrections in a subprocess (``python -m lesionseg_training finetune --events jsonl``),
plots its loss live, and afterwards shows old vs new scores with Promote and Discard.

The subprocess keeps napari safe: a crash, out-of-memory or NaN there ends that process only,
and the active model changes only when the user promotes the new version."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import ComboBox, FloatSpinBox
from qtpy.QtCore import QFileSystemWatcher, QProcess, QProcessEnvironment, QTimer
from qtpy.QtWidgets import (
    QLabel,
    QVBoxLayout,
)

from ..core.errors import LesionsegInputError
from ..core.finetune_outcome import (
    SCORE_KEYS,
    outcome,
    scored_in_sample,
    scored_on,
    scored_type,
    scores_worse,
    verdict,
)
from ..core.progress import duration_text
from ..core.registry import Registry
from .dock_parts import DockWidget, ProjectField, button, panel
from .viewer_session import session_for

if TYPE_CHECKING:
    import napari

DEFAULT_VERSION = "default (shipped)"


class FinetuneWidget(DockWidget):
    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.process: QProcess | None = None
        self.events: list[dict[str, Any]] = []
        self.new_version: Path | None = None
        self.worse = ""  # what the new version scored worse on, when it did
        self.kept_base = False  # no fine-tuned checkpoint beat the old model: the new version is its weights
        self._stdout_buf = b""
        self._stderr = b""
        self.extra_args: list[str] = []  # for tests and power users (e.g. ["--steps", "3"])

        self.session = session_for(napari_viewer)
        self.project = ProjectField(self.session, "project folder with saved corrections", on_done=self.preflight)
        self.project_edit = self.project.line_edit
        self.minutes = FloatSpinBox(value=2.0, min=0.1, max=240.0, step=0.5,
                                    tooltip="how long the fine-tuning may take in all (training, scoring, saving)")
        self.minutes.native.setSuffix(" min")
        self.preflight_label = QLabel("")
        self.preflight_label.setWordWrap(True)
        self.start_button = button("Fine-tune", self.start, tooltip="fine-tune the active model on the saved corrections")
        self.cancel_button = button("Cancel", self.cancel, enabled=False)
        self.promote_button = button("Promote", self.promote, enabled=False,
                                     tooltip="make the new version the project's active model")
        self.compare_button = button("Compare old / new on the selected image", self.compare, enabled=False)
        self.discard_button = button("Discard", self.discard, enabled=False, tooltip="delete the new version")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.scores = QLabel("")
        self.versions = ComboBox(choices=[DEFAULT_VERSION], tooltip="the project's model versions")
        self.activate_button = button("Make active", self.make_active, tooltip="use the chosen version from now on")

        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(3.5, 2.2), dpi=90, layout="constrained")  # axis labels inside the canvas
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setToolTip(LIVE_DICE_TIP)
        self.ax = self.figure.add_subplot(1, 1, 1)
        self._placeholder("the training loss and the Dice on the scored photos\nare drawn here, step by step, "
                          "as a fine-tune runs")

        self.project.widget.label = "project"
        self.minutes.label = "time budget"
        form = panel(self.project.widget, self.minutes, form=True)
        run = panel(self.start_button, self.cancel_button)
        decide = panel(self.promote_button, self.discard_button)
        versions = panel(self.versions, self.activate_button)
        lay = QVBoxLayout(self)
        lay.addWidget(form.native)
        lay.addWidget(self.preflight_label)
        lay.addWidget(run.native)
        lay.addWidget(self.canvas)
        lay.addWidget(self.status)
        lay.addWidget(self.scores)
        lay.addWidget(self.compare_button.native)
        lay.addWidget(decide.native)
        lay.addWidget(versions.native)
        lay.addStretch(1)

        # what the dock says follows the project: set in another dock, corrections saved there,
        # versions made, promoted or discarded by `lesionseg finetune/models` in a terminal
        self._watcher = QFileSystemWatcher(self)
        self._watcher.directoryChanged.connect(self._schedule_refresh)
        self._watcher.fileChanged.connect(self._schedule_refresh)
        self._refresh_timer = QTimer(self)
        self._refresh_timer.setSingleShot(True)
        self._refresh_timer.setInterval(250)  # a save or a new version is several file events
        self._refresh_timer.timeout.connect(self.refresh)
        self._active_seen: Path | None = None
        self._listed_active: str | None = None
        self.session.project_listeners.append(self._on_project_changed)
        if self.session.project_dir is not None:
            self._on_project_changed(self.session.project_dir)

    # ---- preflight -------------------------------------------------------------------------
    def _on_project_changed(self, folder: Path | None) -> None:
        paths = self._watcher.files() + self._watcher.directories()
        if paths:
            self._watcher.removePaths(paths)
        self._active_seen = None
        self.refresh()

    def _schedule_refresh(self, _path: str = "") -> None:
        self._refresh_timer.start()

    def refresh(self) -> None:
        """Say the project as it is now (also when another dock or a terminal changed it); the
        version chosen in the list stays chosen while it exists. When the project's active
        model changed and the session followed the old one, the session follows the new one."""
        proj = self.session.project
        if proj is not None:
            root = proj.root
            if not (root / "models").is_dir():  # moved or deleted meanwhile: nothing is made again
                self.preflight_label.setText(f"the project folder {root} is no longer there")
                return
            want = [str(root), str(root / "models")] + [str(f) for f in (root / "manifest.jsonl",) if f.exists()]
            missing = [w for w in want if w not in self._watcher.files() + self._watcher.directories()]
            if missing:
                self._watcher.addPaths(missing)
            active = Registry(root).active()
            if self._active_seen is not None and active != self._active_seen \
                    and self.session.model_path() == self._active_seen:
                self.session.activated(active)
            self._active_seen = active
        if self.process is not None and self.process.state() != QProcess.NotRunning:
            return  # the plan being carried out stays said until it ends
        self.preflight(keep_choice=True, quick=True)

    def preflight(self, keep_choice: bool = False, quick: bool = False) -> dict[str, Any]:
        """How many corrected images, which base model, and the time it will take.
        ``keep_choice``: the version chosen in the list stays chosen while it exists;
        ``quick``: the corrections are counted without reading them (a refresh on every save
        of a large project; Fine-tune counts them exactly)."""
        proj = self.session.project
        if proj is None:
            self.preflight_label.setText("choose the project folder your corrections are saved in"
                                         if self.session.project_dir is None else self.session.no_project_reason)
            return {}
        pairs = proj.corrected_pairs(read=not quick)
        reg = Registry(proj.root)
        base = reg.active()
        chosen, active = self.versions.value, base.name if base.parent == reg.dir else DEFAULT_VERSION
        self.versions.choices = [DEFAULT_VERSION, *reg.versions()]
        # another version the annotator picked stays picked; one that showed the active follows it
        keep = keep_choice and chosen in self.versions.choices and chosen != self._listed_active
        self.versions.value = chosen if keep else active
        self._listed_active = active
        minutes = self.minutes.value
        if len(pairs) >= 3:
            n_val = max(1, len(pairs) // 4)
            scored = f"{n_val} held-out image(s)"
        else:
            scored = f"the {len(pairs)} training image(s) (too few to hold any out: optimistic)"
        text = (f"{len(pairs)} corrected image(s); base model: {base.name}; at most {minutes:.1f} min in all: "
                f"scoring the old model on {scored}, training (it stops on time or after a fixed number of "
                "steps, whichever comes first: sooner on a fast computer), then scoring the new one")
        reviewed = Counter(t for p in pairs for t in p.label_types)
        blocked = ""  # why a click could only fail
        if set(reviewed) - {"HE"}:  # say which of the model's outputs will learn
            text += "; reviewed for " + ", ".join(f"{t} on {n}" for t, n in reviewed.items()) + \
                " (each type learns from the photos reviewed for it only)"
            outputs = _outputs(base)
            if outputs is not None and not set(reviewed) & set(outputs):
                blocked = (f"The base model has {', '.join(outputs)} only: it has nothing to learn from these "
                           "corrections; choose a model with those outputs (the bundled multi)")
                text += ". " + blocked
        if note := reg.missing_note():
            text += f". Note: {note}"
        for name, missing in reg.incomplete().items():  # a folder copied in by hand, in part
            text += f". Note: models/{name} is not a model version (no {' or '.join(missing)})"
        if not pairs:
            text = "no saved corrections in this project yet: segment, correct and 'Save correction' first"
        self.preflight_label.setText(text)
        return {"pairs": len(pairs), "base": base, "minutes": minutes, "project": proj.root, "blocked": blocked}

    # ---- the subprocess ----------------------------------------------------------------------
    def start(self) -> QProcess | None:
        info = self.preflight()
        if not info.get("pairs"):
            self._error(self.preflight_label.text() or "choose a project folder first")
            return None
        if info["blocked"]:  # said before any process starts (it ran to fail on the corrections' types)
            self._error(info["blocked"])
            return None
        root = info["project"]
        reg = Registry(root)
        out = reg.new_version_path()
        self.base_model: Path = Path(info["base"])
        args = ["-m", "lesionseg_training", "finetune", "--project", str(root),
                "--model", str(info["base"]), "--out", str(out), "--events", "jsonl",
                "--minutes", f"{self.minutes.value:.2f}", *self.extra_args]
        self.events, self._stdout_buf, self._stderr = [], b"", b""
        self.new_version, self.worse, self.kept_base = None, "", False
        proc = QProcess(self)
        env = QProcessEnvironment.systemEnvironment()
        env.insert("PYTHONUNBUFFERED", "1")
        proc.setProcessEnvironment(env)
        proc.readyReadStandardOutput.connect(self._read_stdout)
        proc.readyReadStandardError.connect(lambda: self._collect_stderr())
        proc.finished.connect(self._on_finished)
        self.process = proc
        self._target = out
        self._placeholder("starting: the old model is scored first,\nthen the training steps are drawn here")
        self.start_button.enabled = False
        self.cancel_button.enabled = True
        self.promote_button.enabled = False
        self.discard_button.enabled = False
        self.status.setText("fine-tuning...")
        proc.start(sys.executable, args)
        return proc

    def _collect_stderr(self) -> None:
        if self.process is not None:
            self._stderr = (self._stderr + bytes(self.process.readAllStandardError()))[-20000:]

    def _read_stdout(self) -> None:
        if self.process is None:
            return
        self._stdout_buf += bytes(self.process.readAllStandardOutput())
        *lines, self._stdout_buf = self._stdout_buf.split(b"\n")
        for line in lines:
            try:
                ev = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            self.events.append(ev)
            self._on_event(ev)

    def _on_event(self, ev: dict[str, Any]) -> None:
        kind = ev.get("event")
        if kind == "plan":
            self.status.setText(f"training on {len(ev['train'])} image(s); {ev['validation']}")
        elif kind == "baseline":
            self.status.setText("old model scored; training...")
        elif kind in ("step", "eval"):
            self._plot()
            if kind == "step" and isinstance(ev.get("left"), (int, float)):  # the trainer's pace so far
                self.status.setText(f"training: step {ev['step']}, about {duration_text(ev['left'])} of training "
                                    "left, then the new model is scored")
            if kind == "eval":
                self.status.setText(f"step {ev['step']}: validation Dice {ev['val_dice']:.3f}, AUPR {ev['val_aupr']:.3f}")
        elif kind == "finished":
            self.new_version = Path(ev["model"])

    def _placeholder(self, text: str) -> None:
        """The plot's place before a run's first step: a line saying what will be drawn there
        (bare axes from 0 to 1 said nothing)."""
        self.figure.clear()
        self.ax = self.figure.add_subplot(1, 1, 1)
        self.ax.set_axis_off()
        self.ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=8, color="0.4", transform=self.ax.transAxes)
        self.canvas.draw_idle()

    def _plot(self) -> None:
        """Training loss (red) and Dice on the scored photos (blue, right axis, named held-out or
        in-sample as the plan says) against the step."""
        from matplotlib.ticker import MaxNLocator

        steps = [e for e in self.events if e.get("event") == "step"]
        evals = [e for e in self.events if e.get("event") == "eval"]
        plan = next((e for e in self.events if e.get("event") == "plan"), {})
        self.figure.clear()
        self.ax = self.figure.add_subplot(1, 1, 1)
        self.ax.plot([e["step"] for e in steps], [e["loss"] for e in steps], color="tab:red", lw=1)
        self.ax.set_xlabel("step", fontsize=8)
        self.ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
        self.ax.set_ylabel("training loss", fontsize=8, color="tab:red")
        self.ax.tick_params(labelsize=7)
        if evals:
            ax2 = self.ax.twinx()
            ax2.plot([e["step"] for e in evals], [e["val_dice"] for e in evals], "o-", color="tab:blue", ms=3)
            ax2.set_ylabel(dice_axis_label(plan), fontsize=8, color="tab:blue")
            ax2.tick_params(labelsize=7)
        self.canvas.draw_idle()

    def release(self) -> None:
        """The dock was closed: a running fine-tune is stopped and writes no new version (its
        process cleans up its run folder on SIGTERM; it is killed if it has not ended in 3 s)."""
        self.project.release()
        if self._on_project_changed in self.session.project_listeners:
            self.session.project_listeners.remove(self._on_project_changed)
        self._refresh_timer.stop()
        paths = self._watcher.files() + self._watcher.directories()
        if paths:
            self._watcher.removePaths(paths)
        proc = self.process
        if proc is None or proc.state() == QProcess.NotRunning:
            return
        self._cancelled = True
        proc.terminate()
        if not proc.waitForFinished(3000):
            proc.kill()
            proc.waitForFinished(3000)

    def cancel(self) -> None:
        """End the subprocess: terminate, then kill if it has not gone in 3 s."""
        proc = self.process
        if proc is None or proc.state() == QProcess.NotRunning:
            return
        self._cancelled = True
        proc.terminate()
        # The timer is the process's child: if the process object goes first (the widget closed),
        # the timer goes with it instead of firing on a deleted object.
        killer = QTimer(proc)
        killer.setSingleShot(True)
        killer.timeout.connect(proc.kill)
        killer.start(3000)

    def _on_finished(self, code: int, status: object) -> None:
        self._read_stdout()
        self._collect_stderr()
        self._schedule_refresh()  # the list shows the new version
        self.start_button.enabled = True
        self.cancel_button.enabled = False
        cancelled = getattr(self, "_cancelled", False)
        self._cancelled = False
        if cancelled:
            self.status.setText("cancelled: the active model is unchanged")
            return
        if code != 0 or self.new_version is None:
            tail = self._stderr.decode(errors="replace").strip().splitlines()
            reason = next((ln for ln in reversed(tail) if ln.startswith("error:")), tail[-1] if tail else "")
            crashed = status == QProcess.CrashExit or code in (-9, 137)
            if "MemoryError" in self._stderr.decode(errors="replace") or crashed:
                reason = ("the training process was killed or ran out of memory; close other programs or "
                          "fine-tune on fewer images")
            self._error(f"fine-tuning failed (exit {code}): {reason}. The active model is unchanged.")
            return
        done = next(e for e in reversed(self.events) if e.get("event") == "finished")
        plan = next((e for e in self.events if e.get("event") == "plan"), {})
        rows = [f"{k}: {done.get('old_' + k, float('nan')):.3f} -> {done.get('new_' + k, float('nan')):.3f}"
                for k in SCORE_KEYS]
        self.scores.setText(f"old -> new{scored_type(done)} {scored_on(plan)}\n" + "\n".join(rows))
        kind = outcome(done)
        self.worse = scores_worse(done) if kind == "worse" else ""
        self.kept_base = kind == "kept"
        self.promote_button.text = "Promote"
        advice = {"worse": ": discard it, or promote it anyway",
                  "kept": ", so there is nothing to promote; correct more photos and fine-tune again, or discard it",
                  "new": ": promote it to use it, or discard it"}[kind]
        self.status.setText(verdict(done, plan, self.new_version.name) + advice)
        # a version that kept the old weights would change nothing but the version's name
        self.promote_button.enabled = not self.kept_base
        self.discard_button.enabled = True
        self.compare_button.enabled = True

    # ---- side by side ------------------------------------------------------------------------
    def compare(self) -> Any:
        """Segment the selected photo with the old and the new model (in a worker thread) and
        show them side by side: old on the photo, new on a copy placed to its right."""
        from napari.layers import Image
        from napari.qt.threading import create_worker

        if self.new_version is None:
            return None
        active = self.viewer.layers.selection.active
        photos = [ly for ly in self.viewer.layers if isinstance(ly, Image) and ly.rgb]
        layer = active if isinstance(active, Image) and active.rgb else (photos[0] if photos else None)
        if layer is None:
            self._error("open a photograph to compare the models on")
            return None
        worker = create_worker(_compare_job, self.base_model, self.new_version, layer.data, _start_thread=False,
                               _connect={"errored": lambda err: self._error(f"comparison failed: {err}")})
        worker.returned.connect(lambda res, ly=layer: self._show_comparison(ly, *res))
        self.compare_button.enabled = False
        worker.finished.connect(lambda: setattr(self.compare_button, "enabled", True))
        self.status.setText(f"segmenting {layer.name} with the old and the new model...")
        worker.start()
        return worker

    def _show_comparison(self, layer: Any, old: Any, new: Any) -> None:
        shift = (0.0, float(layer.data.shape[1] * layer.scale[-1]) * 1.03)
        translate = tuple(np.add(layer.translate[-2:], shift))
        name = layer.name
        self.viewer.add_labels(old.mask, name=f"{name} old model ({old.model_version})", opacity=0.6,
                               scale=layer.scale[-2:], translate=layer.translate[-2:])
        self.viewer.add_image(layer.data, name=f"{name} (copy for the new model)", rgb=True,
                              scale=layer.scale, translate=translate)
        self.viewer.add_labels(new.mask, name=f"{name} new model ({new.model_version})", opacity=0.6,
                               scale=layer.scale[-2:], translate=translate)
        self.viewer.reset_view()
        self.status.setText(f"left: old model, {len(old.lesions)} lesion(s); right: new model, {len(new.lesions)} lesion(s)")

    # ---- decisions ---------------------------------------------------------------------------
    def make_active(self) -> Path:
        """Make the version chosen in the list the project's active model (any version, any time)."""
        proj = self.session.project
        if proj is None:
            raise LesionsegInputError(None, self.session.no_project_reason)
        reg = Registry(proj.root)
        choice = self.versions.value
        if choice == DEFAULT_VERSION:
            reg.use_default()
        else:
            reg.promote(choice)
        self.session.activated(reg.active())
        self.status.setText(f"active model: {reg.active().name}")
        self.preflight()
        return reg.active()

    def _own_registry(self) -> Registry:
        """The registry of the project the new version was made in (``<project>/models/<it>``),
        whatever the project field says now: promoting after the field changed went to the
        other project, which has no such version."""
        assert self.new_version is not None
        return Registry(self.new_version.parent.parent)

    def promote(self, anyway: bool = False) -> Path | None:
        """Make the new version active. When it scored worse than the old model, the first
        click only warns (the button then reads "Promote anyway"); a second click promotes."""
        if self.new_version is None or self.kept_base:
            return None
        if self.worse and not anyway and self.promote_button.text != "Promote anyway":
            self.promote_button.text = "Promote anyway"
            self.status.setText(f"{self.new_version.name} scored worse than the old model ({self.worse}); "
                                "click 'Promote anyway' to use it all the same")
            return None
        self.promote_button.text = "Promote"
        reg = self._own_registry()
        path = reg.promote(self.new_version.name)
        proj = self.session.project
        if proj is not None and proj.root.resolve() == reg.dir.parent.resolve():
            self.session.activated(path)  # Segment uses it at once (it once needed Enter in its project field)
            self.status.setText(f"{path.name} is now the active model of this project")
        else:  # the project field changed while it trained: the docks keep the model of the project set now
            self.status.setText(f"{path.name} is now the active model of the project {reg.dir.parent} it was made in "
                                "(not of the project set now)")
        self.preflight()
        self.promote_button.enabled = False
        self.discard_button.enabled = False
        return path

    def discard(self) -> Path | None:
        if self.new_version is None:
            return None
        try:
            dest = self._own_registry().discard(self.new_version.name)
        except LesionsegInputError as err:
            self._error(str(err))
            return None
        self.status.setText(f"discarded (kept in {dest.parent})")
        self.promote_button.enabled = False
        self.discard_button.enabled = False
        self.new_version = None
        return dest


def _outputs(model_dir: Path) -> list[str] | None:
    """A model folder's outputs from its config alone (None when it cannot be read: the
    fine-tune then says what is wrong)."""
    from ..core.model_folder import load_model_config

    try:
        return list(load_model_config(model_dir).network.outputs)
    except (LesionsegInputError, OSError, ValueError):
        return None


# The live Dice is the training loop's check: the network alone (one view, no calibration) on
# the model's working grid, where a small lesion is a few pixels; it follows the trend and reads
# lower than the full-size scores after the run (0.86 against 0.995 for the same base model on
# the same two photos in docs/step5_finetune.png before this was said).
LIVE_DICE_TIP = ("the plot's Dice is a quick check during training: the network alone on the model's "
                 "working grid (coarser than the photo, one view, no calibration). It shows the trend; the "
                 "scores after the run are the full-size ones and usually read higher")


def dice_axis_label(plan: dict[str, Any]) -> str:
    """The live plot's Dice axis: a quick check (``LIVE_DICE_TIP``), and whether its points are
    held-out photos or the training ones."""
    val = plan.get("val", [])
    if scored_in_sample(plan):  # short: the label runs along the plot's height
        return "quick Dice, in-sample"
    return f"quick Dice, {len(val)} held-out" if val else "quick Dice"


def _compare_job(old_dir: Path, new_dir: Path, data: Any) -> Any:
    """Worker body: both models' predictions for one photo (yields progress)."""
    from ..core.inference import predict
    from ..core.model_folder import load_model_folder
    from ._arrays import as_rgb_uint8

    rgb = as_rgb_uint8(data)
    results = []
    for folder in (old_dir, new_dir):
        pred = yield from predict(load_model_folder(folder), rgb, locate_disc=False)  # masks shown, not places
        results.append(pred)
    return tuple(results)
