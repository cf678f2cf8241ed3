"""The "Segment lesions" dock widget: pick an image and a model, Run (in a worker thread,
with per-tile progress and Cancel), get probability / lesions / fuzzy layers; move the
threshold to re-threshold instantly; save the corrected mask into a project folder.

The state lives in the viewer's :class:`~napari_lesionseg.core.session.AnnotationSession`
(shared with the other docks); each button is one call to it."""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, FloatSlider, FloatSpinBox, Label
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QHeaderView,
    QLabel,
    QProgressBar,
    QSizePolicy,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from ..core.bundled import BUNDLED_MODELS, DEFAULT_MODEL_NAME, bundled_models, default_model_dir
from ..core.errors import LesionsegInputError
from ..core.inference import Prediction, Progress
from ..core.lesion_types import HE, LONG_NAMES, TYPE_VALUE, lesion_outputs
from ..core.model_folder import LoadedModel, load_model_config
from ..core.registry import Registry
from ..core.runtime import pick_device
from ..core.segment_layers import (
    labels_to_label_map,
    layer_names,
    legend,
    lesion_style,
    prediction_layers,
)
from ..core.session import EditsWouldBeLost
from ._arrays import as_rgb_uint8
from .dock_parts import DockWidget, LayerPicker, ModelPicker, ProjectField, StepQueue, WhenSettled, button, panel
from .viewer_session import keep_removed_work, open_layer_photo, save_open_work, segmented_photo_name, session_for

if TYPE_CHECKING:
    import napari

DEFAULT_LABEL = "default (shipped)"
TABLE_COLUMNS = ["type", "area px", "area mm2", "DD from disc", "zone", "field r"]
FIELD_R_TIP = ("distance from the centre of the photo's round field of view, as a share of its radius "
               "(0 centre, 1 rim): sort by it to find the lesions at the periphery")
MAX_TABLE_ROWS = 2000
TABLE_SETTLE_MS = 300  # the lesion table is listed again this long after the mask's last change


def legend_html(types: list[str]) -> str:
    """The dock's legend: each lesion type's colour, name and the label value that paints it."""
    parts = [(c, f"{name} = {v}") for c, name, v in legend(types)] + [("#ff00d9", "fuzzy: the mask may be wrong")]
    # an entry is never broken across lines (its square once ended one line, its name began the next)
    return " &nbsp; ".join(f'<span style="color:{c}">&#9632;</span>&nbsp;{text.replace(" ", "&nbsp;")}'
                           for c, text in parts)


def photo_layer_name(layer: Any) -> str | None:
    """A layer's name if it is a photo to segment (an RGB or 2-D image, not one of ours)."""
    from napari.layers import Image

    if isinstance(layer, Image) and (layer.rgb or layer.data.ndim == 2) and not layer.metadata.get("lesionseg"):
        return layer.name
    return None


def _number_item(value: float | None):
    """A table cell holding a number, so that it sorts as one (Qt compares the displayed values:
    numbers shown as text would sort 1155 before 17); empty for None."""
    from qtpy.QtWidgets import QTableWidgetItem

    item = QTableWidgetItem()
    if value is not None:
        item.setData(Qt.DisplayRole, value)
    return item


class _TypeItem(QTableWidgetItem):
    """A lesion type's cell: sorts in the legend's order (HE, MA, EX, SE), not alphabetically."""

    def __lt__(self, other: QTableWidgetItem) -> bool:
        return TYPE_VALUE.get(self.text(), 99) < TYPE_VALUE.get(other.text(), 99)


class SegmentWidget(DockWidget):
    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        self.worker: Any = None
        self.turns = StepQueue()  # a finished run's layers, added one per turn of the event loop
        self.turns.when_idle.append(self._on_shown)
        models = {DEFAULT_LABEL: default_model_dir()}
        for name, folder in bundled_models().items():
            if name != DEFAULT_MODEL_NAME:
                models[f"{name}: {BUNDLED_MODELS[name]} (shipped)"] = folder

        self._current_image = ""
        self.image_picker = LayerPicker(napari_viewer, photo_layer_name, prefer_selected=True,
                                        tooltip="the photo to segment")
        self.model_picker = ModelPicker(models, self._ask_model_folder,
                                        tooltip="the model: a shipped one, a project's version or a folder")
        self.model_picker.changed.connect(self._on_model_changed)
        self.device_picker = ComboBox(choices=["auto", "cpu", "cuda", "mps"], tooltip="where the model runs")
        self.threshold = FloatSlider(value=0.5, min=0.001, max=0.999, step=0.001, readout=False,
                                     tooltip="the probability above which a pixel is a lesion")
        self.threshold_label = Label(value="")
        self.threshold.changed.connect(self._on_threshold)
        self.run_button = button("Run", self.run, tooltip="segment the chosen photo")
        self.cancel_button = button("Cancel", self.cancel, enabled=False)
        self.rethreshold_button = button("Re-threshold (discard edits)", partial(self.apply_threshold, force=True),
                                         enabled=False)
        self.progress = QProgressBar()
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.project = ProjectField(self.session, "project folder for corrections",
                                    on_done=self.load_project_models)
        self.project_edit = self.project.line_edit
        self.session.project_listeners.append(self._on_project_changed)
        self.session.active_model_listeners.append(self._on_activated)
        self.save_button = button("Save correction", self.save_correction)
        self.export_button = button("Export (mask, CSV, overlay)", self.export)
        self.export_project_button = button("Export whole project", self.export_project)
        self.mm_per_px = FloatSpinBox(value=0.0, min=0.0, max=1.0, step=0.0005,
                                      tooltip="the photo's scale, for lesion areas in mm2 in the exported CSVs")
        self.mm_per_px.native.setDecimals(5)  # some 0.004 mm per px at IDRiD's 4288 px: 3 decimals are too few
        self.mm_per_px.native.setSpecialValueText("not set (areas in px only)")
        self.outlines = CheckBox(text="outlines only", tooltip="draw lesions as outlines, to see the fundus under them")
        self.outlines.changed.connect(self._on_outlines)
        self._types: list[str] = [HE]  # the model's lesion types
        self._shown_types: list[str] = [HE]  # those and the shown photo's (legend, per-type boxes)
        self.legend = Label(value=legend_html(self._types))
        self.legend.native.setWordWrap(True)
        self.legend.native.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Preferred)  # wrap at the dock's width
        self.type_boxes: dict[str, CheckBox] = {
            t: CheckBox(value=True, text=t, tooltip=f"show {LONG_NAMES[t]}s") for t in ("HE", "MA", "EX", "SE")}
        for box in self.type_boxes.values():
            box.changed.connect(self._apply_type_visibility)
        self.type_row = panel(*self.type_boxes.values(), label="show", visible=False)
        self.table = QTableWidget(0, len(TABLE_COLUMNS))
        self.table.setHorizontalHeaderLabels(TABLE_COLUMNS)
        self.table.horizontalHeaderItem(TABLE_COLUMNS.index("field r")).setToolTip(FIELD_R_TIP)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(0, Qt.AscendingOrder)  # hemorrhages first (Qt starts descending)
        self.table.setMinimumHeight(120)  # about four rows; the dock's free height goes to it
        self.table.setToolTip("the lesions of the mask shown: click a row to centre the view on it; click a header to sort")
        self.table.cellClicked.connect(self.centre_on_row)
        self._table_lesions: list = []
        self._saved_lesions: tuple[tuple | None, list] = (None, [])  # (photo, version, map), its lesions
        # photos whose mask shown changed since their run or save (painted, re-thresholded, edited
        # in Review): the table lists that mask, labelled again a moment after the last change
        self._changed: dict[str, int] = {}  # name: changes counted
        # labelling a 4288x2848 photo's four types takes 0.1-0.17 s (IDRiD 05 and 10, idle Zen 4):
        # not after every paint stroke, nor in a tab behind Review
        self._settle = WhenSettled(self, self._on_mask_settled, TABLE_SETTLE_MS)
        self._counts_text = ""  # the status line as _show_counts last wrote it
        # (the prediction, weakly: a closed photo's maps go; % of its fuzzy map over 0.5)
        self._fuzzy_share: tuple[Callable[[], Any], float] = (lambda: None, 0.0)
        self.mm_per_px.changed.connect(lambda _v: self.fill_table(self.image_picker.name))

        for widget, label in ((self.image_picker.widget, "image"), (self.model_picker.widget, "model"),
                              (self.device_picker, "device"), (self.mm_per_px, "mm per px")):
            widget.label = label
        self.form = panel(self.image_picker.widget, self.model_picker.widget, self.device_picker,
                        panel(self.threshold, self.threshold_label, label="threshold"), self.type_row, self.outlines,
                        self.mm_per_px, form=True)
        buttons = panel(self.run_button, self.cancel_button)
        lay = QVBoxLayout(self)
        lay.addWidget(self.form.native)
        lay.addWidget(self.legend.native)  # outside the form: a form row cuts a wrapped label's second line
        lay.addWidget(buttons.native)
        lay.addWidget(self.progress)
        lay.addWidget(self.rethreshold_button.native)
        lay.addWidget(self.table, 1)
        lay.addWidget(self.project.native)
        lay.addWidget(self.save_button.native)
        lay.addWidget(self.export_button.native)
        lay.addWidget(self.export_project_button.native)
        lay.addWidget(self.status)

        self.image_picker.changed.connect(lambda name: self._on_image_switched(name or ""))
        self.image_picker.on_renamed.append(self._on_photo_renamed)
        self.viewer.layers.events.removed.connect(self._on_layer_removed)
        self.viewer.layers.events.inserted.connect(self._on_layer_inserted)
        for layer in self.viewer.layers:  # lesions layers shown before the dock opened
            if segmented_photo_name(layer) is not None:
                self._follow_mask(layer)
        self._on_image_switched(self.image_picker.name)
        self.load_project_models()  # a project another dock (or File > Open on it) set before this one opened
        self._on_model_changed(self.model_picker.path)

    def release(self) -> None:
        """The dock (or napari) was closed: save the open photos' hand edits when a project is
        set (closing napari without pressing Save lost them), stop the run, stop following the
        layer list (the session and its results stay with the viewer for a reopened dock)."""
        save_open_work(self.viewer, self.session)
        if self.worker is not None:
            self.worker.quit()
        self.viewer.layers.events.removed.disconnect(self._on_layer_removed)
        self.viewer.layers.events.inserted.disconnect(self._on_layer_inserted)
        self.image_picker.release()
        self.project.release()
        if self._on_project_changed in self.session.project_listeners:
            self.session.project_listeners.remove(self._on_project_changed)
        if self._on_activated in self.session.active_model_listeners:
            self.session.active_model_listeners.remove(self._on_activated)

    @property
    def results(self) -> dict[str, Prediction]:
        """The predictions of this viewer's photos, by image layer name."""
        return {n: p.prediction for n, p in self.session.photos.items() if p.prediction is not None}

    # ---- choices ---------------------------------------------------------------------------
    def _ask_model_folder(self) -> str | None:
        return QFileDialog.getExistingDirectory(self, "Model folder") or None

    def _on_model_changed(self, path: Path | None) -> None:
        """A model was chosen: the session uses it and the slider shows its threshold."""
        if path is None:
            return
        self.session.set_model(path)
        try:
            cfg = load_model_config(path)
        except LesionsegInputError as err:
            self.status.setText(str(err))
            return
        thr = cfg.inference.threshold
        self._types = lesion_outputs(cfg.network.outputs)
        self._show_types(self.image_picker.name)
        with self.threshold.changed.blocked():
            self.threshold.value = round(thr, 3)
        self.threshold_label.value = f"{thr:.3f} (model)"

    def _on_activated(self, folder: Path) -> None:
        """Another dock made ``folder`` the project's active model: use it from now on."""
        self.set_model_folder(folder)

    def set_model_folder(self, folder: str | Path) -> None:
        """Use the model folder ``folder`` (adds it to the model list unless listed already,
        as the bundled models are)."""
        self.model_picker.choose(folder)

    def _on_project_changed(self, folder: Path | None) -> None:
        """One project for all docks, whichever set it: its model versions are listed and the
        one it promoted is used (set in *Review lesions* or by File > Open on a project, the Run
        here used the bundled default, not the version the annotator had promoted); the open
        photo's correction comes back from it. A folder that cannot be a project (a file, say)
        is said at once."""
        if folder and self.session.project is None:
            self._error(self.session.no_project_reason)
            return
        self.load_project_models()
        name = self.image_picker.name
        if folder and name and name in self.viewer.layers and self._lesions(name) is None:
            self._restore_correction(name)

    def load_project_models(self) -> None:
        """List the project's model versions and select the one it promoted; a project that
        promoted none leaves the model chosen here as it is (it once put the bundled default in
        place of the annotator's choice)."""
        proj = self.session.project
        if proj is None:
            return
        reg = Registry(proj.root)
        for version in reg.versions():
            self.model_picker.add(reg.dir / version)
        promoted = reg.promoted()
        if promoted is not None:
            self.model_picker.choose(promoted)
        elif note := reg.missing_note():
            self.status.setText(note)

    def model(self) -> LoadedModel:
        self.session.device = str(pick_device(self.device_picker.value))
        return self.session.model()

    def _on_outlines(self, on: bool) -> None:
        lesions = self._lesions(self.image_picker.name)
        if lesions is not None:
            lesions.contour = 2 if on else 0

    def _show_types(self, name: str | None) -> None:
        """The legend and the per-type boxes: the model's lesion types and any the photo's label
        map holds (a photo segmented with the five-output model, shown under a hemorrhage-only
        one, keeps its microaneurysms and exudates: they need their colours named)."""
        types = self._types
        if name and name in self.session.photos:
            with contextlib.suppress(LesionsegInputError, OSError):
                types = self.session.photo_types(name)
        self._shown_types = types
        self.legend.value = legend_html(types)
        for t, box in self.type_boxes.items():
            box.visible = t in types
        self.type_row.visible = len(types) > 1

    def hidden_types(self) -> list[str]:
        return [t for t in self._shown_types if not self.type_boxes[t].value]

    def _apply_type_visibility(self, *_: object) -> None:
        """Per-type visibility: a hidden type's label value is drawn transparent (its pixels
        stay in the mask and are saved as they are)."""
        lesions = self._lesions(self.image_picker.name)
        if lesions is None:
            return
        cmap = lesion_style()["colormap"]
        for t in self.hidden_types():
            cmap[TYPE_VALUE[t]] = "transparent"
        lesions.colormap = cmap

    def fill_table(self, name: str) -> None:
        """The photo's lesions, every type, with area and place (sortable): the saved
        correction's once there is one (after Save, or brought back from the project), else the
        prediction's (the table once kept listing the model's lesions after they were deleted
        and saved)."""
        photo = self.session.photos.get(name)
        lesions = [] if photo is None else self._photo_lesions(photo)
        mm = self._mm()
        self.table.setSortingEnabled(False)
        self.table.setRowCount(min(len(lesions), MAX_TABLE_ROWS))
        self._table_lesions = lesions[:MAX_TABLE_ROWS]
        for row, les in enumerate(self._table_lesions):
            type_item = _TypeItem(les.type)
            type_item.setData(Qt.UserRole + 1, row)  # the lesion's index, whatever the sort order
            self.table.setItem(row, 0, type_item)
            area_mm = les.area_px * mm * mm if mm else None
            self.table.setItem(row, 1, _number_item(int(les.area_px)))
            self.table.setItem(row, 2, _number_item(None if area_mm is None else round(area_mm, 4)))
            d = les.od_distance_dd
            self.table.setItem(row, 3, _number_item(None if d is None else round(d, 2)))
            self.table.setItem(row, 4, QTableWidgetItem(les.zone or ""))
            r = les.field_r
            self.table.setItem(row, 5, _number_item(None if r is None else round(r, 2)))
        self.table.setSortingEnabled(True)
        # columns with nothing to say stay hidden: mm2 without a scale, place without a disc,
        # place in the field without a round field of view
        self.table.setColumnHidden(2, not mm)
        located = any(les.od_distance_dd is not None for les in self._table_lesions)
        self.table.setColumnHidden(3, not located)
        self.table.setColumnHidden(4, not located)
        self.table.setColumnHidden(5, all(les.field_r is None for les in self._table_lesions))

    def _photo_lesions(self, photo: Any) -> list:
        """The lesions of the mask shown when it changed since its run or save; else the saved
        correction's, else the prediction run here, else those of the label map shown for a
        prediction stored in the project (*Open next image*: nothing was run)."""
        pred = photo.prediction
        shown = self._lesions(photo.name)
        if shown is not None and photo.name in self._changed:
            label = self.session.label_map(shown.data, photo.name)  # as a save keeps it: "new label" 7 is a hemorrhage
            key: tuple = (photo.name, "changed", id(shown.data), self._changed[photo.name])
        elif photo.saved is not None:
            label, key = photo.saved, (photo.name, photo.saved_version, id(photo.saved))
        elif pred is not None:
            return pred.all_lesions()
        else:
            if shown is None:
                return []
            label, key = np.asarray(shown.data), (photo.name, "shown", id(shown.data))
        if self._saved_lesions[0] != key:  # labelled once per saved version (or map shown)
            from ..core.export import label_lesions

            anatomy = self.session.anatomy(photo.name)
            self._saved_lesions = (key, label_lesions(label, None if pred is None else pred.probability, None,
                                                      None, anatomy))
        return self._saved_lesions[1]

    def _on_layer_inserted(self, event: Any) -> None:
        """The current photo's lesions layer came from the project (*Open next image* adds it a
        turn after the photo): list its lesions and say what it is. Every lesions layer of ours
        is watched for hand edits made with no project to keep them (:meth:`_on_painted`)."""
        name = self.image_picker.name
        layer = event.value
        if segmented_photo_name(layer) is not None:
            self._follow_mask(layer)
        if not name or layer.name != layer_names(name)["lesions"] or self.turns.busy:
            return  # not this photo's, or this dock's own run showing its result
        try:
            photo = open_layer_photo(self.session, self.viewer.layers[name])
        except (LesionsegInputError, OSError) as err:
            self._error(str(err))
            return
        if photo.prediction is not None:
            return
        self._show_types(name)
        self._apply_type_visibility()
        self.fill_table(name)
        if photo.saved is None and layer.metadata.get("model_version"):
            n = sum(1 for les in self._photo_lesions(photo) if les.type == HE)
            self.status.setText(f"{name}: the project's stored prediction (model '{layer.metadata['model_version']}'): "
                                f"{n} lesion(s); press Run to segment it again")

    def _follow_mask(self, layer: Any) -> None:
        layer.events.paint.connect(self._on_painted)
        layer.events.data.connect(self._on_mask_changed)

    def _on_mask_changed(self, event: Any) -> None:
        """A photo's mask was painted or replaced: its lesion table is listed again once the
        changes settle (it once went on listing the model's lesions: 10 rows beside a status of
        21 lesions after the threshold was halved, lesions deleted in Review still listed)."""
        name = segmented_photo_name(event.source)
        if self._released or name is None:
            return
        self._changed[name] = self._changed.get(name, 0) + 1
        if name == self.image_picker.name:
            self._settle.poke()

    def _on_mask_settled(self) -> None:
        """The lesion table, and the counts when the status line still shows them (not a
        message written since, such as a save or a warning), follow the mask shown."""
        name = self.image_picker.name
        if self.status.text() == self._counts_text:
            self._show_counts(name)
        self.fill_table(name)

    def _on_painted(self, event: Any) -> None:
        """A hand edit: the table follows it (:meth:`_on_mask_changed`). With no project folder
        set nothing can keep it (closing napari lost such edits without a word): said once per
        viewer, in the status line and as a napari notification (the dock may be a hidden tab)."""
        self._on_mask_changed(event)
        if self._released or self.session.project is not None or self.session.warned_unkept:
            return
        self.session.warned_unkept = True
        name = segmented_photo_name(event.source) or "this photo"
        text = (f"{name}: hand edits are kept only in a project folder: choose one in the field above Save "
                "correction, then save (switching photos or closing napari saves them too)")
        self.status.setText(text)
        from napari.utils.notifications import show_warning

        show_warning(text)

    def centre_on_row(self, row: int, _col: int = 0) -> None:
        """Centre the viewer on the lesion of table row ``row`` (as sorted now)."""
        from .review import VIEW_PX, camera

        item = self.table.item(row, 0)
        name = self.image_picker.name
        if item is None or name not in self.viewer.layers:
            return
        les = self._table_lesions[int(item.data(Qt.UserRole + 1))]
        layer = self.viewer.layers[name]
        sy, sx = layer.scale[-2:]
        ty, tx = layer.translate[-2:]
        cam = camera(self.viewer)
        cam.center = (ty + sy * les.centroid_y, tx + sx * les.centroid_x)
        extent = max((les.y1 - les.y0) * sy, (les.x1 - les.x0) * sx, 40.0) * 3.0
        cam.zoom = VIEW_PX / extent

    def _mm(self) -> float | None:
        return self.mm_per_px.value or None

    def _threshold(self) -> float:
        return float(self.threshold.value)

    def _lesions(self, name: str) -> Any:
        lname = layer_names(name)["lesions"]
        return self.viewer.layers[lname] if lname in self.viewer.layers else None

    # ---- running -----------------------------------------------------------------------------
    def run(self) -> Any:
        """Start segmentation of the chosen image layer; returns the worker."""
        from napari.qt.threading import create_worker

        name = self.image_picker.name
        if not name:
            self._error("open a fundus photograph first (File > Open, or File > Open Sample)")
            return None
        layer = self.viewer.layers[name]
        try:
            model = self.model()
            rgb = as_rgb_uint8(layer.data)
            open_layer_photo(self.session, layer, rgb)
        except (LesionsegInputError, ValueError) as err:
            self._error(str(err))
            return None
        # the error handler given at creation: connected afterwards, superqt also re-raises the
        # error in the event loop (a second, raw report of one failure)
        self.worker = create_worker(self.session.run, name, rgb, threshold=self._threshold(), _start_thread=False,
                                    _connect={"errored": lambda err: self._error(f"segmentation failed: {err}")})
        self.worker.yielded.connect(self._on_progress)
        self.worker.returned.connect(lambda pred, n=name, ly=layer: self._on_result(n, ly, pred))
        self.worker.finished.connect(self._on_finished)
        self.run_button.enabled = False
        self.cancel_button.enabled = True
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
        if self.turns.busy:  # the result is still being shown: Run comes back after it
            return
        self.run_button.enabled = True
        self.cancel_button.enabled = False

    def _on_result(self, name: str, layer: Any, pred: Prediction) -> None:
        """Show a finished run: one layer per turn of the event loop (napari takes 0.1-0.35 s of
        the GUI thread to create each, benchmarks/gui_pauses.py; the viewer repaints and takes
        input between them), then the counts and the table; Run is enabled again at the end.
        Nothing for a photo whose layer was removed while it ran (its session entry, forgotten,
        would have come back with the prediction's maps)."""
        if name not in self.viewer.layers:
            self.status.setText(f"{name} was closed while it was segmented: its result was dropped")
            return
        lesions = self._lesions(name)
        label, edited = self.session.accept_run(name, pred, None if lesions is None else lesions.data)
        photo = self.session.photos[name]
        if photo.draft_restored:
            from napari.utils.notifications import show_info

            photo.draft_restored = False
            show_info(f"{name}: brought back {photo.draft_what} kept at {photo.draft_kept_at} and never saved "
                      "(napari closed before): save them, or press 'Re-threshold (discard edits)' to "
                      "take the model's mask")
        steps: list[Callable[[], None]] = [
            partial(self._put_layer, name, label if kind == "labels" else data, kwargs, kind, edited)
            for data, kwargs, kind in prediction_layers(name, pred, tuple(layer.scale), tuple(layer.translate))]
        steps.append(partial(self._show_result, name, pred, edited))
        self.turns.run(steps)

    def _on_shown(self) -> None:
        if self.worker is None or not self.worker.is_running:
            self._on_finished()

    def _put_layer(self, name: str, data: Any, kwargs: dict[str, Any], kind: str, edited: bool) -> None:
        """Add one result layer of photo ``name``, or replace its data (never a hand-edited
        lesions layer's); nothing if the photo was closed meanwhile."""
        if name not in self.viewer.layers:
            self.turns.clear()
            return
        lname = kwargs["name"]
        if lname in self.viewer.layers:
            if kind != "labels" or not edited:
                self.viewer.layers[lname].data = data
        else:
            getattr(self.viewer, f"add_{kind}")(data, **kwargs)

    def _show_result(self, name: str, pred: Prediction, edited: bool) -> None:
        if name not in self.viewer.layers:
            return
        if not edited:
            self._changed.pop(name, None)  # the mask shown is the run's: its lesions are the prediction's
        self.viewer.layers.selection.active = self._lesions(name)
        self._on_outlines(self.outlines.value)
        self._apply_type_visibility()
        self._show_counts(name)
        self.fill_table(name)
        if edited:
            self.rethreshold_button.enabled = True
            self.status.setText(self.status.text() + "; your hand edits were kept (press 'Re-threshold (discard "
                                "edits)' to take the model's mask instead)")
        else:
            self.rethreshold_button.enabled = False
        self._store_prediction(name)
        if pred.notes:
            from napari.utils.notifications import show_warning

            for note in pred.notes:
                show_warning(note)

    def _show_counts(self, name: str) -> None:
        """The mask's lesion counts in the status line (the mask as a save keeps it)."""
        photo = self.session.photos.get(name)
        lesions = self._lesions(name)
        if photo is None or lesions is None:
            return
        from ..core.lesions import lesion_counts

        others = [t for t in self._shown_types if t != HE]
        counts = lesion_counts(self.session.label_map(lesions.data, name), [TYPE_VALUE[t] for t in [HE, *others]])
        n, px = counts[TYPE_VALUE[HE]]
        also = ", ".join(f"{counts[TYPE_VALUE[t]][0]} {t}" for t in others)
        text = f"{n} lesion(s), {px} px at threshold {self._threshold():.3f}{'; also ' + also if also else ''}"
        pred = photo.prediction
        if pred is None:  # re-thresholded from the project's stored prediction
            text += " (the project's stored prediction)"
        else:
            if self._fuzzy_share[0]() is not pred:  # the same at every threshold: once per run
                self._fuzzy_share = (weakref.ref(pred), float((pred.fuzzy > 0.5).mean() * 100))
            text += f"; fuzzy > 0.5 on {self._fuzzy_share[1]:.1f}% of the image"
            # what the prediction warned of (not a fundus photo, too small, an out-of-memory retry;
            # where the disc or the fovea is uncertain) stays in the line, not only in a passing notification
            notes = pred.notes + pred.anatomy.notes()
            if notes:
                text += "; " + "; ".join(notes)
        self.status.setText(text)
        self._counts_text = text

    def _store_prediction(self, name: str) -> None:
        """With a project set, keep the prediction there (orders the review by uncertainty),
        off the GUI thread."""
        if self.session.project is None:
            return
        from napari.qt.threading import create_worker

        worker = create_worker(self.session.store, name, _start_thread=False, _connect={
            "errored": lambda err: self._error(f"could not store the prediction in the project: {err}")})
        self._store_worker = worker
        worker.start()

    # ---- threshold -------------------------------------------------------------------------
    def _on_threshold(self, value: float) -> None:
        self.threshold_label.value = f"{value:.3f}"
        self.apply_threshold(force=False)

    def apply_threshold(self, force: bool = False) -> bool:
        """Re-threshold the stored probability (no model run). Refuses, unless ``force``, when
        the mask was edited by hand; returns whether the mask was replaced."""
        name = self.image_picker.name
        lesions = self._lesions(name)
        photo = self.session.photos.get(name)
        if lesions is None or photo is None:
            return False
        stored = None  # the probability of a prediction stored in the project (nothing run here)
        if photo.prediction is None:
            pname = layer_names(name)["probability"]
            if pname not in self.viewer.layers:  # a correction brought back without its prediction
                self.status.setText(f"{name}: the mask shown is from the project, without the model's probability; "
                                    "press Run to segment the photo here, then the threshold re-thresholds it")
                return False
            stored = np.asarray(self.viewer.layers[pname].data)
        try:
            mask = self.session.rethreshold(name, self._threshold(), lesions.data, force=force, probability=stored)
        except EditsWouldBeLost:
            self.rethreshold_button.enabled = True
            self.status.setText("the mask was edited by hand: press 'Re-threshold' to replace it (edits are lost)")
            return False
        lesions.data = mask
        self.rethreshold_button.enabled = False
        self._show_counts(name)
        if stored is not None:
            self.fill_table(name)  # the table lists the mask shown (a run's lists the run's lesions)
        return True

    # ---- saving ------------------------------------------------------------------------------
    def _on_image_switched(self, new: str) -> None:
        """Switching images saves the previous image's hand edits and Review decisions (when a
        project is set) and brings back the new image's latest correction from the project."""
        old, self._current_image = self._current_image, new
        lesions = self._lesions(old) if old and old != new else None
        if lesions is not None and self.session.project is not None and self.session.unsaved(old, lesions.data):
            self.save_correction(old)
        if new and new in self.viewer.layers:
            self._restore_correction(new)
        self._show_types(new)
        self.fill_table(new)

    def _on_photo_renamed(self, old: str, new: str) -> None:
        """The chosen photo's layer was renamed: this dock's own records follow (its result layers
        and its place in the session follow by ``follow_layer_names``, for any photo; an edited
        photo renamed once raised in the event loop, and Save then looked for '<new name> lesions')."""
        self.session.rename_photo(old, new)
        if old in self._changed:
            self._changed[new] = self._changed.pop(old)
        if self._current_image == old:
            self._current_image = new

    def _on_layer_removed(self, event: Any) -> None:
        """A photo's lesions layer was deleted: its unsaved work is saved first (``keep_removed_work``)."""
        self._changed.pop(segmented_photo_name(event.value), None)
        keep_removed_work(self.session, event.value, self.status.setText, self._error)

    def _restore_correction(self, new: str) -> None:
        """Show the project's latest correction of the photo ``new`` when none is shown, or the
        hand edits made on it and never saved (its draft)."""
        try:
            photo = open_layer_photo(self.session, self.viewer.layers[new])
        except (LesionsegInputError, OSError) as err:
            self._error(str(err))
            return
        if self._lesions(new) is not None or (photo.saved is None and photo.draft is None):
            return
        layer = self.viewer.layers[new]
        shown = photo.saved if photo.draft is None else photo.draft
        self.viewer.add_labels(shown.copy(), name=layer_names(new)["lesions"], scale=tuple(layer.scale),
                               translate=tuple(layer.translate),
                               metadata={"lesionseg": True, "model_version": None}, **lesion_style())
        if photo.draft is not None:  # hand edits kept as a draft (napari closed before they were saved)
            photo.draft = None
            self.status.setText(f"{new}: brought back {photo.draft_what} kept at {photo.draft_kept_at}"
                                " and never saved (napari closed before): save them to keep them")
        elif photo.saved_version is not None:
            self.status.setText(f"{new}: brought back correction v{photo.saved_version:04d} from the project")
        else:
            self.status.setText(f"{new}: brought back its correction (from the project set before)")

    def save_correction(self, name: str | None = None) -> Path | None:
        """Append the current mask as a new label version in the project folder."""
        name = name or self.image_picker.name
        lesions = self._lesions(name)
        if self.session.project is None:
            self._error(self.session.no_project_reason)
            return None
        if lesions is None:
            self._error(f"no '{layer_names(name)['lesions']}' layer to save: run the segmentation first")
            return None
        try:
            if name in self.viewer.layers:  # else removed, its edits saved as it goes: the session has it
                open_layer_photo(self.session, self.viewer.layers[name])
            version = self.session.save_correction(name, lesions.data)
        except (LesionsegInputError, OSError) as err:
            self._error(str(err))
            return None
        assert version is not None
        self._changed.pop(name, None)  # the mask shown is the one saved
        self.fill_table(name)
        self.status.setText(f"saved {version.path.relative_to(self.session.project.root)}")
        return version.path

    def export(self) -> list[Path]:
        """Write the current mask (lossless), lesion CSV and overlay PNG to <project>/exports/."""
        from ..core.export import export_image

        name = self.image_picker.name
        lesions = self._lesions(name)
        if self.session.project is None or lesions is None:
            self._error("choose a project folder and run the segmentation first")
            return []
        pred = self.results.get(name)
        try:
            open_layer_photo(self.session, self.viewer.layers[name])
            types = self.session.photo_types(name)  # a five-output photo's types, whatever the model now
        except (LesionsegInputError, OSError) as err:
            self._error(str(err))
            return []
        files, _ = export_image(self.session.project.root / "exports", name,
                                as_rgb_uint8(self.viewer.layers[name].data),
                                labels_to_label_map(lesions.data, types), pred.probability if pred else None,
                                pred.fuzzy if pred else None, self._mm(),
                                self.session.anatomy(name))
        self.status.setText(f"exported {len(files)} files to {files[0].parent}")
        return files

    def export_project(self) -> list[Path]:
        """Export the latest correction of every image in the project to <project>/exports/."""
        from ..core.export import export_project

        proj = self.session.project
        if proj is None:
            self._error(self.session.no_project_reason)
            return []
        try:
            files = export_project(proj, proj.root / "exports", self._mm())
        except (LesionsegInputError, OSError) as err:
            self._error(str(err))
            return []
        self.status.setText(f"exported {len(proj.corrected_pairs())} corrected image(s) to {proj.root / 'exports'}")
        return files

