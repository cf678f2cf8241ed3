"""The "Segment lesions" dock widget: pick an image and a model, Run (in a worker thread,
with per-tile progress and Cancel), get probability / lesions / fuzzy layers; move the
threshold to re-threshold instantly; save the corrected mask into a project folder."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from ..core.bundled import default_model_dir
from ..core.errors import LesionsegInputError
from ..core.inference import Prediction, Progress, predict
from ..core.lesions import threshold_mask
from ..core.model_folder import LoadedModel, load_model_folder
from ..core.registry import Registry
from ..core.runtime import pick_device
from ..core.segment_layers import labels_to_label_map, layer_names, prediction_layers
from ..core.store import Project
from ._arrays import as_rgb_uint8

if TYPE_CHECKING:
    import napari

DEFAULT_LABEL = "default (shipped)"
LOAD_LABEL = "load model folder..."


class SegmentWidget(QWidget):
    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.worker: Any = None
        self.results: dict[str, Prediction] = {}  # by image layer name
        self.auto_masks: dict[str, np.ndarray] = {}
        self._model_cache: dict[tuple[str, str], LoadedModel] = {}
        self._model_paths: dict[str, Path] = {DEFAULT_LABEL: default_model_dir()}

        self.image_combo = QComboBox()
        self._current_image = ""
        self._saved: dict[str, np.ndarray] = {}  # the mask as last saved (or as the model made it)
        self.image_combo.currentTextChanged.connect(self._on_image_switched)
        self.model_combo = QComboBox()
        self.model_combo.addItems([DEFAULT_LABEL, LOAD_LABEL])
        self.model_combo.activated.connect(self._on_model_chosen)
        self.device_combo = QComboBox()
        self.device_combo.addItems(["auto", "cpu", "cuda", "mps"])
        self.threshold = QSlider(Qt.Horizontal)
        self.threshold.setRange(1, 99)
        self.threshold.setValue(50)
        self.threshold_label = QLabel("0.50 (model)")
        self.threshold.valueChanged.connect(self._on_threshold)
        self.run_button = QPushButton("Run")
        self.run_button.clicked.connect(self.run)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.rethreshold_button = QPushButton("Re-threshold (discard edits)")
        self.rethreshold_button.setEnabled(False)
        self.rethreshold_button.clicked.connect(lambda: self.apply_threshold(force=True))
        self.progress = QProgressBar()
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.project_edit = QLineEdit()
        self.project_edit.setPlaceholderText("project folder for corrections")
        self.project_edit.editingFinished.connect(self.load_project_models)
        browse = QPushButton("...")
        browse.clicked.connect(self._browse_project)
        self.save_button = QPushButton("Save correction")
        self.save_button.clicked.connect(self.save_correction)
        self.export_button = QPushButton("Export (mask, CSV, overlay)")
        self.export_button.clicked.connect(self.export)
        self.export_project_button = QPushButton("Export whole project")
        self.export_project_button.clicked.connect(self.export_project)

        form = QFormLayout()
        form.addRow("image", self.image_combo)
        form.addRow("model", self.model_combo)
        form.addRow("device", self.device_combo)
        row = QHBoxLayout()
        row.addWidget(self.threshold)
        row.addWidget(self.threshold_label)
        form.addRow("threshold", row)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        proj = QHBoxLayout()
        proj.addWidget(self.project_edit)
        proj.addWidget(browse)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addLayout(buttons)
        lay.addWidget(self.progress)
        lay.addWidget(self.rethreshold_button)
        lay.addLayout(proj)
        lay.addWidget(self.save_button)
        lay.addWidget(self.export_button)
        lay.addWidget(self.export_project_button)
        lay.addWidget(self.status)
        lay.addStretch(1)

        self.viewer.layers.events.inserted.connect(self._refresh_images)
        self.viewer.layers.events.removed.connect(self._refresh_images)
        self._refresh_images()

    # ---- choices ---------------------------------------------------------------------------
    def _refresh_images(self, *_: object) -> None:
        from napari.layers import Image

        current = self.image_combo.currentText()
        names = [ly.name for ly in self.viewer.layers if isinstance(ly, Image) and
                 (ly.rgb or ly.data.ndim == 2) and not ly.metadata.get("lesionseg")]
        self.image_combo.clear()
        self.image_combo.addItems(names)
        active = self.viewer.layers.selection.active
        pick = current if current in names else (active.name if active is not None and active.name in names else None)
        if pick:
            self.image_combo.setCurrentText(pick)

    def _on_model_chosen(self, index: int) -> None:
        if self.model_combo.itemText(index) == LOAD_LABEL:
            folder = QFileDialog.getExistingDirectory(self, "Model folder")
            if folder:
                self.set_model_folder(folder)
            else:
                self.model_combo.setCurrentText(DEFAULT_LABEL)

    def set_model_folder(self, folder: str | Path) -> None:
        """Use the model folder ``folder`` (adds it to the model list)."""
        path = Path(folder)
        label = f"{path.name} ({path.parent})"
        self._model_paths[label] = path
        if self.model_combo.findText(label) < 0:
            self.model_combo.insertItem(self.model_combo.count() - 1, label)
        self.model_combo.setCurrentText(label)

    def _browse_project(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Project folder")
        if folder:
            self.project_edit.setText(folder)
            self.load_project_models()

    def load_project_models(self) -> None:
        """List the project's model versions and select its active one."""
        if not self.project_edit.text():
            return
        reg = Registry(self.project_edit.text())
        for version in reg.versions():
            self.set_model_folder(reg.dir / version)
        active = reg.active()
        if active != default_model_dir():
            self.set_model_folder(active)
        else:
            self.model_combo.setCurrentText(DEFAULT_LABEL)

    def model(self) -> LoadedModel:
        path = self._model_paths[self.model_combo.currentText()]
        device = str(pick_device(self.device_combo.currentText()))
        key = (str(path), device)
        if key not in self._model_cache:
            self._model_cache[key] = load_model_folder(path, device)
            thr = self._model_cache[key].config.inference.threshold
            self.threshold.blockSignals(True)
            self.threshold.setValue(int(round(thr * 100)))
            self.threshold.blockSignals(False)
            self.threshold_label.setText(f"{thr:.2f} (model)")
        return self._model_cache[key]

    # ---- running -----------------------------------------------------------------------------
    def run(self) -> Any:
        """Start segmentation of the chosen image layer; returns the worker."""
        from napari.qt.threading import create_worker

        name = self.image_combo.currentText()
        if not name:
            self._error("open a fundus photograph first (File > Open, or File > Open Sample)")
            return None
        layer = self.viewer.layers[name]
        try:
            model = self.model()
            rgb = as_rgb_uint8(layer.data)
        except (LesionsegInputError, ValueError) as err:
            self._error(str(err))
            return None
        self.worker = create_worker(predict, model, rgb, _start_thread=False)
        self.worker.yielded.connect(self._on_progress)
        self.worker.returned.connect(lambda pred, n=name, ly=layer: self._on_result(n, ly, pred))
        self.worker.errored.connect(lambda err: self._error(f"segmentation failed: {err}"))
        self.worker.finished.connect(self._on_finished)
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setValue(0)
        self.status.setText(f"segmenting {name} with '{model.version}'...")
        self.worker.start()
        return self.worker

    def cancel(self) -> None:
        if self.worker is not None:
            self.worker.quit()
            self.status.setText("cancelled")

    def _on_progress(self, prog: Progress) -> None:
        self.progress.setMaximum(max(prog.total, 1))
        self.progress.setValue(prog.done)

    def _on_finished(self) -> None:
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def _on_result(self, name: str, layer: Any, pred: Prediction) -> None:
        self.results[name] = pred
        self.auto_masks[name] = pred.mask.copy()
        self._saved[name] = pred.mask.copy()
        names = layer_names(name)
        for data, kwargs, kind in prediction_layers(name, pred, tuple(layer.scale), tuple(layer.translate)):
            lname = kwargs["name"]
            if lname in self.viewer.layers:
                self.viewer.layers[lname].data = data
            else:
                getattr(self.viewer, f"add_{kind}")(data, **kwargs)
        self.viewer.layers.selection.active = self.viewer.layers[names["lesions"]]
        n = len(pred.lesions)
        fuzzy = float((pred.fuzzy > 0.5).mean() * 100)
        self.status.setText(f"{n} lesion(s), {int(pred.mask.sum())} px; fuzzy region {fuzzy:.1f}% of the image")
        self.rethreshold_button.setEnabled(False)
        self._store_prediction(name, layer, pred)
        if pred.notes:
            from napari.utils.notifications import show_warning

            for note in pred.notes:
                show_warning(note)

    def _store_prediction(self, name: str, layer: Any, pred: Prediction) -> None:
        """With a project set, keep the prediction there (orders the review by uncertainty)."""
        src = layer.metadata.get("path") or getattr(layer.source, "path", None)
        if not self.project_edit.text() or not src:
            return
        try:
            proj = Project(self.project_edit.text())
            iid = proj.add_image(src)
            proj.save_prediction(iid, pred.model_version, pred.probability, pred.mask, pred.fuzzy)
        except (LesionsegInputError, OSError) as err:
            self._error(f"could not store the prediction in the project: {err}")

    # ---- threshold -------------------------------------------------------------------------
    def _on_threshold(self, value: int) -> None:
        self.threshold_label.setText(f"{value / 100:.2f}")
        self.apply_threshold(force=False)

    def apply_threshold(self, force: bool = False) -> bool:
        """Re-threshold the stored probability (no model run). Refuses, unless ``force``, when
        the mask was edited by hand; returns whether the mask was replaced."""
        name = self.image_combo.currentText()
        pred = self.results.get(name)
        lname = layer_names(name)["lesions"]
        if pred is None or lname not in self.viewer.layers:
            return False
        labels = self.viewer.layers[lname]
        if not force and not np.array_equal(labels.data, self.auto_masks[name]):
            self.rethreshold_button.setEnabled(True)
            self.status.setText("the mask was edited by hand: press 'Re-threshold' to replace it (edits are lost)")
            return False
        t = self.threshold.value() / 100
        mask = threshold_mask(pred.probability, t, self.model().config.inference.min_lesion_area)
        labels.data = mask
        self.auto_masks[name] = mask.copy()
        self.rethreshold_button.setEnabled(False)
        return True

    # ---- saving ------------------------------------------------------------------------------
    def _on_image_switched(self, new: str) -> None:
        """Switching images saves the previous image's hand edits (when a project is set)."""
        old, self._current_image = self._current_image, new
        if old and old != new and self.project_edit.text() and self.is_edited(old):
            self.save_correction(old)

    def is_edited(self, name: str) -> bool:
        """True when the mask of ``name`` differs from what was last saved or segmented."""
        lname = layer_names(name)["lesions"]
        if lname not in self.viewer.layers or name not in self._saved:
            return False
        return not np.array_equal(self.viewer.layers[lname].data, self._saved[name])

    def save_correction(self, name: str | None = None) -> Path | None:
        """Append the current mask as a new label version in the project folder."""
        name = name or self.image_combo.currentText()
        lname = layer_names(name)["lesions"]
        if not self.project_edit.text():
            self._error("choose a project folder first")
            return None
        if lname not in self.viewer.layers:
            self._error(f"no '{lname}' layer to save: run the segmentation first")
            return None
        try:
            proj = Project(self.project_edit.text())
            src = self.viewer.layers[name].metadata.get("path") or getattr(self.viewer.layers[name].source, "path", None)
            if not src:
                raise LesionsegInputError(None, f"layer '{name}' has no source file; open the photo from disk")
            iid = proj.add_image(src)
            pred = self.results.get(name)
            version = proj.save_label(iid, labels_to_label_map(self.viewer.layers[lname].data),
                                      model_version=pred.model_version if pred else None,
                                      model_mask=self.auto_masks.get(name))
        except (LesionsegInputError, OSError) as err:
            self._error(str(err))
            return None
        self._saved[name] = np.asarray(self.viewer.layers[lname].data).copy()
        self.status.setText(f"saved {version.path.relative_to(proj.root)}")
        return version.path

    def export(self) -> list[Path]:
        """Write the current mask (lossless), lesion CSV and overlay PNG to <project>/exports/."""
        from ..core.export import export_image

        name = self.image_combo.currentText()
        lname = layer_names(name)["lesions"]
        if not self.project_edit.text() or lname not in self.viewer.layers:
            self._error("choose a project folder and run the segmentation first")
            return []
        pred = self.results.get(name)
        files, _ = export_image(Path(self.project_edit.text()) / "exports", name,
                             as_rgb_uint8(self.viewer.layers[name].data),
                             labels_to_label_map(self.viewer.layers[lname].data),
                             pred.probability if pred else None, pred.fuzzy if pred else None)
        self.status.setText(f"exported {len(files)} files to {files[0].parent}")
        return files

    def export_project(self) -> list[Path]:
        """Export the latest correction of every image in the project to <project>/exports/."""
        from ..core.export import export_project

        if not self.project_edit.text():
            self._error("choose a project folder first")
            return []
        proj = Project(self.project_edit.text())
        try:
            files = export_project(proj, proj.root / "exports")
        except (LesionsegInputError, OSError) as err:
            self._error(str(err))
            return []
        self.status.setText(f"exported {len(proj.corrected_pairs())} corrected image(s) to {proj.root / 'exports'}")
        return files

    def _error(self, message: str) -> None:
        from napari.utils.notifications import show_error

        self.status.setText(message)
        show_error(message)
