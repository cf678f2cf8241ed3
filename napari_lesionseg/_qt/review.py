"""The "Review lesions" dock widget: lesions and possible missed lesions in a table, likeliest
mistakes first (core/review.py), those less likely than a setting counted, not listed; Next /
Previous (buttons, Alt-Right / Alt-Left) centre and zoom on each; delete, accept or mark a region
unsure (label 255, excluded from training), or every selected row's region at once; Alt-F toggles
the fuzzy overlay."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, FloatSpinBox
from qtpy.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from ..core.errors import LesionsegInputError
from ..core.fuzzy import binary_entropy
from ..core.lesion_types import HE, LESION_TYPES, LONG_NAMES, TYPE_VALUE
from ..core.review import HIDE_BELOW, Region, ReviewSet, review_regions, review_settings
from ..core.review_metrics import QUEUE_FIRST as FIRST_ROWS  # the rows evaluate's queue figures count
from ..core.segment_layers import UNSURE, all_layer_names, layer_names, project_image_layers
from .dock_parts import DockWidget, LayerPicker, ProjectField, StepQueue, WhenSettled, button, panel
from .viewer_session import keep_removed_work, open_layer_photo, save_open_work, segmented_photo_name, session_for

if TYPE_CHECKING:
    import napari

COLUMNS = ["kind", "area px", "mean p", "score", "status", "field r", "DD to fovea"]
SCORE_COLUMN = COLUMNS.index("score")
FIELD_COLUMN = COLUMNS.index("field r")  # shown when the regions have their place in the round field
FOVEA_COLUMN = COLUMNS.index("DD to fovea")  # shown when the photo's fovea is known
#: the list's orders (core/review.py ORDERS), as the order box names them
ORDER_NAMES = {"mistakes": "likely mistakes first", "rim": "from the rim inwards", "macula": "from the fovea outwards"}
# what the score column holds: the model's estimated chance that the region is a mistake, or
# (without the model's rates) the region's mean fuzzy value
SCORE_HEADERS = {
    True: ("p(wrong)", "estimated chance that this region is a mistake: a false alarm for a lesion, a "
                           "missed lesion for a possible miss (the model's rates, counted on its training photos)"),
    False: ("fuzziness", "the region's mean fuzzy value (no rates for this layer: not a chance)"),
}
KIND_TEXT = {"lesion": "lesion", "fuzzy": "possible miss"}
KEYS = {"Alt-Right": "next", "Alt-Left": "previous", "Alt-F": "toggle_fuzzy"}
RELIST_MS = 300  # a replaced mask is listed again this long after its last replacement
VIEW_PX = 500.0  # a region is shown about this many screen pixels across (with its margin)


class ReviewWidget(DockWidget):
    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.review: ReviewSet | None = None  # the regions listed (the rest in ``review.hidden``)
        # decisions on photos the session does not hold (their marks are kept in the session's photo)
        self._loose_marks: dict[str, dict[tuple[str, int, int], str]] = {}
        self.current = -1
        self.image_picker = LayerPicker(napari_viewer, segmented_photo_name, tooltip="a segmented photo to review")
        self.image_picker.changed.connect(self._on_photo_switched)
        self._listed_mask: str | None = None  # the lesions layer listed: its mask replaced, listed again
        # listed again once a replaced mask settles (a threshold slider's steps each replace it)
        self._relist = WhenSettled(self, self.refresh, RELIST_MS)
        self.type_combo = ComboBox(choices=[HE], value=HE, tooltip="review one lesion type at a time",
                                   visible=False)  # which lesion type's regions the table lists
        self.type_combo.changed.connect(lambda _t: self.refresh())
        self.reviewed_boxes: dict[str, CheckBox] = {
            t: CheckBox(text=t, tooltip=f"tick when you have checked this photo's {LONG_NAMES[t]}s: the saved "
                                        f"correction then teaches fine-tuning about them (unticked types are left "
                                        f"out, not taken as none)")
            for t in LESION_TYPES}
        for box in self.reviewed_boxes.values():
            box.changed.connect(self._on_reviewed)
        self.reviewed_row = panel(*self.reviewed_boxes.values(), label="checked for:", visible=False)
        refresh = button("Refresh", self.refresh, tooltip="list the regions again from the mask as it is now")
        self.hide_below = FloatSpinBox(
            value=HIDE_BELOW, min=0.0, max=0.5, step=0.01, label="list p(wrong) from",
            tooltip="regions less likely than this to be a mistake are counted below the table, not listed "
                    "(0: list every region); only with the model's rates")
        self.hide_below.changed.connect(lambda _v: self._fill_table())
        self.hide_row = panel(self.hide_below, form=True, visible=False)
        self.order_combo = ComboBox(
            choices=[(ORDER_NAMES["mistakes"], "mistakes")], value="mistakes",
            label="order", tooltip="the list's order; from the rim of the photo's round field inwards: the "
                                   "periphery's regions together (a tessellated fundus's false alarms crowd there): "
                                   "Shift-click to select them, then Delete; from the fovea outwards: the macula's "
                                   "regions first (where a lesion weighs most in grading)")
        self.order_combo.changed.connect(self._on_order)
        self.order_row = panel(self.order_combo, form=True, visible=False)  # only for regions with a place
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.horizontalHeaderItem(FIELD_COLUMN).setToolTip(
            "distance from the centre of the photo's round field of view, as a share of its radius (0 centre, 1 rim)")
        self.table.horizontalHeaderItem(FOVEA_COLUMN).setToolTip(
            "distance from the fovea in optic-disc diameters (the macula: within 1)")
        self.table.setColumnHidden(FIELD_COLUMN, True)
        self.table.setColumnHidden(FOVEA_COLUMN, True)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.ExtendedSelection)  # Delete etc. on several rows at once
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.cellClicked.connect(lambda row, _c: self.go(row, keep_selection=True))
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        # each action: the marks it set with what they were before, and whether it painted pixels
        self._undo: list[tuple[list[tuple[tuple[str, int, int], str]], bool]] = []
        buttons = {text: button(text, slot) for text, slot in [
            ("Previous", self.previous), ("Next", self.next), ("Accept", self.accept), ("Delete", self.delete),
            ("Mark unsure", self.mark_unsure), ("Toggle fuzzy", self.toggle_fuzzy), ("Undo", self.undo)]}
        self.session = session_for(napari_viewer)
        self.project = ProjectField(self.session, "project folder: step through its images, most uncertain first")
        self.project_edit = self.project.line_edit
        self.next_image_button = button("Open next image", self.open_next_image,
                                        tooltip="save this photo's edits, open the project's next most uncertain one")
        self.save_button = button("Save correction", self.save_correction,
                                  tooltip="keep the mask as this photo's correction, also when unchanged (a photo "
                                          "found right): Open next image passes over corrected photos")
        self.turns = StepQueue()  # closing one image and opening the next, a layer per turn
        self.turns.when_idle.append(lambda: setattr(self.next_image_button, "enabled", True))
        self._image_order: list[str] = []
        self._opened: str | None = None  # the image "Open next image" showed last
        self._unreadable: dict[str, str] = {}  # project photos that could not be opened, why: passed over
        self.info = QLabel("run 'Segment lesions' on a photo: its regions are listed here")
        self.info.setWordWrap(True)
        top = panel(self.image_picker.widget, self.type_combo, refresh)
        nav = panel(*(buttons[t] for t in ("Previous", "Next")))
        act = panel(*(buttons[t] for t in ("Accept", "Delete", "Mark unsure", "Undo", "Toggle fuzzy")))
        checked = panel(self.reviewed_row, form=True)  # the row's label beside it
        lay = QVBoxLayout(self)
        lay.addWidget(top.native)
        lay.addWidget(checked.native)
        lay.addWidget(self.hide_row.native)
        lay.addWidget(self.order_row.native)
        lay.addWidget(self.table, 1)
        lay.addWidget(nav.native)
        lay.addWidget(act.native)
        lay.addWidget(self.project.native)
        lay.addWidget(panel(self.save_button, self.next_image_button).native)
        lay.addWidget(self.info)
        for key, action in KEYS.items():
            self.viewer.bind_key(key, lambda _v, a=action: getattr(self, a)(), overwrite=True)
        self.viewer.layers.events.removed.connect(self._on_layer_removed)
        if self.image_picker.name:
            self.refresh()  # a photo segmented before the dock was opened is listed at once

    def release(self) -> None:
        """The dock (or napari) was closed: the open photos' unsaved work is saved (a project
        set), its key bindings and layer-list connections go."""
        save_open_work(self.viewer, self.session)
        self.viewer.layers.events.removed.disconnect(self._on_layer_removed)
        for key in KEYS:
            self.viewer.bind_key(key, None)
        for layer in [ly for ly in self.viewer.layers if ly.name.endswith(" current region")
                      and ly.metadata.get("lesionseg")]:
            self.viewer.layers.remove(layer)
        self.project.release()
        self.image_picker.release()
        self._follow_mask(None)

    def _layers(self):
        names = layer_names(self.image_picker.name)
        get = self.viewer.layers
        if any(n not in get for n in names.values()):
            return None
        return get[names["lesions"]], get[names["probability"]], get[names["fuzzy"]]

    def _sync_types(self) -> None:
        """The type filter offers the lesion types the photo's prediction holds; the 'checked
        for' boxes show what the photo's next correction will be saved as reviewed for."""
        others = self.session.type_maps(self.image_picker.name)
        types = [HE] + [t for t in LESION_TYPES if t in others]
        if list(self.type_combo.choices) != types:
            current = self.type_combo.value
            with self.type_combo.changed.blocked():
                self.type_combo.choices = types
                self.type_combo.value = current if current in types else HE
        multi = len(types) > 1
        self.type_combo.visible = multi
        self.reviewed_row.visible = multi
        photo = self.session.photos.get(self.image_picker.name)
        for t, box in self.reviewed_boxes.items():
            box.visible = t in types
            with box.changed.blocked():
                box.value = photo is not None and t in photo.reviewed

    def _on_reviewed(self, *_: object) -> None:
        name = self.image_picker.name
        if name:
            self.session.set_reviewed(name, [t for t, b in self.reviewed_boxes.items() if b.value])

    def kind(self) -> str:
        """The lesion type under review."""
        return self.type_combo.value or HE

    def refresh(self) -> ReviewSet | None:
        """Recompute the regions from the current (possibly edited) mask, for the lesion type
        chosen (hemorrhages: with the model's review rates; another type: by its own
        probability and its entropy)."""
        layers = self._layers()
        if layers is None:
            self.review, self.current, self._undo = None, -1, []
            self.table.setRowCount(0)  # no rows of a photo no longer under review
            self.info.setText("no segmentation for this image yet: run 'Segment lesions' first")
            return None
        self._sync_types()
        lab, prob, fuzzy = layers
        self._follow_mask(lab)
        name = self.image_picker.name
        if name not in self.session.photos and name in self.viewer.layers:
            with contextlib.suppress(LesionsegInputError, OSError):  # said where it matters: Save, Segment
                open_layer_photo(self.session, self.viewer.layers[name])
        kind, others = self.kind(), self.session.type_maps(name)
        data = self.session.label_map(lab.data, name)  # as a save keeps it: a "new label" 7 is a hemorrhage
        decided = self._decided(data, kind)
        anatomy = self.session.anatomy(name)  # each region's place in the round field
        if kind != HE and kind in others:
            maps = others[kind]
            mine = (data == TYPE_VALUE[kind]).view(np.uint8)
            self.review = review_regions(mine, maps.probability, binary_entropy(maps.probability),
                                         threshold=maps.threshold, decided=decided, anatomy=anatomy)
        else:
            threshold, review = review_settings(prob.metadata)
            self.review = review_regions(data, prob.data, fuzzy.data, threshold=threshold, review=review,
                                         decided=decided, anatomy=anatomy)
        self._offer_orders(self.review.orders())
        self.review.order = self.order_combo.value
        held = self._statuses()  # decided before (Accept on a lesion paints nothing): not a mistake to find
        self.review.regions = [replace(r, score=0.0, decided=True) if _key(r) in held else r
                               for r in self.review.regions]
        self._undo = []
        return self._fill_table()

    def _on_photo_switched(self, _name: object = None) -> None:
        """Another photo chosen (in the box, by Open next image, or by the one under review
        going): its regions are listed at once. The table once went on listing the photo before,
        and Next then framed, and Delete or Accept painted, those regions on the new photo."""
        self.refresh()

    def _follow_mask(self, lab: Any) -> None:
        """List again when the mask of the photo under review is replaced as a whole (Segment's
        threshold, Run, Re-threshold; painting is not a replacement): the rows listed the mask
        before, and Delete left the new mask's pixels of a grown lesion."""
        name = None if lab is None else lab.name
        if name == self._listed_mask:
            return
        old = self._listed_mask
        if old is not None and old in self.viewer.layers:
            with contextlib.suppress(TypeError, ValueError):
                self.viewer.layers[old].events.data.disconnect(self._on_mask_replaced)
        self._listed_mask = name  # by name: a dock's viewer is napari's proxy, a new object at each lookup
        if lab is not None:
            lab.events.data.connect(self._on_mask_replaced)

    def _on_mask_replaced(self, event: object = None) -> None:
        """The rows go at once (an action must not act on the mask before) and come back once the
        mask settles; Next lists them at once. Another photo's mask replaced (Segment's run on it
        ending) leaves the list, the place in it and Undo as they are: they went."""
        if self._released:
            return
        source = getattr(event, "source", None)
        if source is not None and getattr(source, "name", None) != layer_names(self.image_picker.name)["lesions"]:
            return
        self.review, self.current, self._undo = None, -1, []
        self.table.setRowCount(0)
        self.info.setText("the mask was replaced: listing its regions again")
        self._relist.poke()

    def _decided(self, data: np.ndarray, kind: str) -> np.ndarray | None:
        """The pixels of type ``kind`` the annotator changed in the label map ``data`` from the
        model's mask (None: no model mask to compare with)."""
        try:
            model = self.session.model_mask(self.image_picker.name)
        except (LesionsegInputError, OSError):
            return None
        if model is None or model.shape != data.shape:
            return None
        value = TYPE_VALUE[kind]
        return (data == value) != (model == value)

    def _fill_table(self) -> ReviewSet | None:
        """List the regions at or above the 'list p(wrong) from' setting (every region without
        the model's rates); statuses stay with their regions."""
        if self.review is None:
            return None
        self.review = self.review.cut(self.hide_below.value)
        self.hide_row.visible = self.review.rated
        self.order_row.visible = len(self.review.orders()) > 1
        self.current = -1
        frame = f"{self.image_picker.name} current region"
        if frame in self.viewer.layers and len(self.viewer.layers[frame].data):
            self.viewer.layers[frame].data = []  # no region is current: the frame left on one looked current
        self.table.clearSelection()
        self.table.setRowCount(len(self.review.regions))
        header, tip = SCORE_HEADERS[self.review.rated]
        item = QTableWidgetItem(header)
        item.setToolTip(tip)
        self.table.setHorizontalHeaderItem(SCORE_COLUMN, item)
        for row, r in enumerate(self.review.regions):
            for col, text in enumerate([KIND_TEXT[r.kind], str(r.area_px), f"{r.mean_prob:.2f}", f"{r.score:.2f}"]):
                self.table.setItem(row, col, QTableWidgetItem(text))
            self.table.setItem(row, FIELD_COLUMN, QTableWidgetItem("" if r.field_r is None else f"{r.field_r:.2f}"))
            self.table.setItem(row, FOVEA_COLUMN, QTableWidgetItem("" if r.fovea_dd is None else f"{r.fovea_dd:.2f}"))
        self.table.setColumnHidden(FIELD_COLUMN, not self.review.placed)
        self.table.setColumnHidden(FOVEA_COLUMN, not self.review.near_fovea)
        self._show_statuses()
        everything = self.review.regions + self.review.hidden
        n_les = sum(r.kind == "lesion" for r in everything)
        what = "" if self.kind() == HE else f" ({LONG_NAMES[self.kind()]})"
        text = f"{n_les} lesion(s){what}, {len(everything) - n_les} possible missed lesion(s)"
        total = self.review.expected_mistakes()  # None: the scores are no chances
        if total is not None and len(self.review.regions) > FIRST_ROWS:
            text += (f"; about {total:.0f} of the listed regions are likely mistakes, "
                     f"{self.review.expected_mistakes(FIRST_ROWS):.0f} of them in the first {FIRST_ROWS} rows "
                     "(the model's rates)")
        elif total is not None and self.review.hidden:
            text += f"; about {total:.1f} of the {len(self.review.regions)} listed are likely mistakes"
        undecided = [r for r in self.review.hidden if not r.decided]
        if undecided:
            text += (f"; {len(undecided)} less likely than {self.hide_below.value:.2f} not listed "
                     f"(about {self.review.expected_hidden():.1f} mistakes among them)")
        if n_edited := sum(r.decided for r in everything):
            text += f"; {n_edited} decided by you{'' if self.review.hidden else ' (listed last)'}"
        self.info.setText(text)
        return self.review

    def _offer_orders(self, orders: list[str]) -> None:
        """The order box offers ``orders`` (those that mean something for the photo's regions);
        the order chosen stays while it is offered, else the list falls back to the first."""
        if list(self.order_combo.choices) == orders:
            return
        keep = self.order_combo.value if self.order_combo.value in orders else orders[0]
        with self.order_combo.changed.blocked():
            self.order_combo.choices = [(ORDER_NAMES[o], o) for o in orders]
            self.order_combo.value = keep

    def _on_order(self, order: str) -> None:
        """The list in the order chosen; the regions' statuses and the decisions stay with them."""
        if self.review is not None:
            self.review.order = order
            self._fill_table()

    def _fit_columns(self) -> None:
        """The dock as wide as the table's columns: opened alone, it hid the status column behind
        a horizontal scroll bar."""
        header = self.table.horizontalHeader()
        columns = sum(max(self.table.sizeHintForColumn(c), header.sectionSizeHint(c)) for c in range(len(COLUMNS))
                      if not self.table.isColumnHidden(c))
        width = (self.table.verticalHeader().sizeHint().width() + columns + 2 * self.table.frameWidth()
                 + self.table.verticalScrollBar().sizeHint().width() + 4)  # + rounding, grid lines
        self.table.setMinimumWidth(min(width, 600))

    def _marks(self) -> dict[tuple[str, int, int], str]:
        """The decisions on the photo under review, by pixel (``Photo.review_marks``): they
        outlive a new list (Refresh, a replaced mask, another photo chosen and this one again),
        where the rows' statuses once went, and an accepted lesion came back at the top."""
        name = self.image_picker.name
        photo = self.session.photos.get(name)
        return photo.review_marks if photo is not None else self._loose_marks.setdefault(name, {})

    def _statuses(self) -> dict[tuple[str, int], str]:
        """The listed regions' statuses, by region (kind, label): the marks of this lesion type
        whose pixel still holds what the decision left (a mask replaced, or napari's own Undo,
        takes a decision back), on the region that pixel lies in now."""
        layers = self._layers()
        if self.review is None or layers is None:
            return {}
        data = layers[0].data
        marks = [(y, x, status) for (kind, y, x), status in self._marks().items()
                 if kind == self.kind() and 0 <= y < data.shape[0] and 0 <= x < data.shape[1]]
        if not marks:
            return {}
        ys, xs = np.array([m[0] for m in marks]), np.array([m[1] for m in marks])
        # as a save keeps them: a pixel painted over with napari's "new label" (7) is a hemorrhage
        values = self.session.label_map(np.asarray(data[ys, xs]), self.image_picker.name)
        left = {"accepted": TYPE_VALUE[self.kind()], "deleted": 0, "unsure": UNSURE}
        out: dict[tuple[str, int], str] = {}
        for (y, x, status), v in zip(marks, values):
            if v != left[status]:
                continue
            lesion, miss = int(self.review.lesion_components[y, x]), int(self.review.fuzzy_components[y, x])
            if lesion or miss:
                out[("lesion", lesion) if lesion else ("fuzzy", miss)] = status
        return out

    def _show_statuses(self) -> None:
        if self.review is None:
            return
        held = self._statuses()
        for row, r in enumerate(self.review.regions):
            self.table.setItem(row, 4, QTableWidgetItem(held.get(_key(r), "") or ("edited" if r.decided else "")))
        self._fit_columns()

    def _anchor(self, r: Region, prob: np.ndarray) -> tuple[str, int, int]:
        """Where a decision on ``r`` is kept: the lesion type and the region's most probable
        pixel (inside the core that accepting a possible miss paints)."""
        assert self.review is not None
        y0, x0, y1, x1 = r.bbox
        comp = (self.review.lesion_components if r.kind == "lesion" else self.review.fuzzy_components)[y0:y1, x0:x1]
        p = np.where(comp == r.label, np.asarray(prob[y0:y1, x0:x1], np.float32), -1.0)
        iy, ix = np.unravel_index(int(np.argmax(p)), p.shape)
        return self.kind(), y0 + int(iy), x0 + int(ix)

    def region(self) -> Region | None:
        if self.review is None or not (0 <= self.current < len(self.review.regions)):
            return None
        return self.review.regions[self.current]

    def go(self, row: int, keep_selection: bool = False) -> Region | None:
        """Centre and zoom the camera on region ``row`` and select its row (``keep_selection``,
        as a click does: a row clicked inside a multi-row selection keeps the selection)."""
        if self.review is None and self.refresh() is None:
            return None
        assert self.review is not None
        if not self.review.regions:
            return None
        self.current = row % len(self.review.regions)
        r = self.review.regions[self.current]
        lab = self._layers()[0]
        sy, sx = lab.scale[-2:]
        ty, tx = lab.translate[-2:]
        y0, x0, y1, x1 = r.bbox
        cam = camera(self.viewer)
        cam.center = (ty + sy * r.centroid[0], tx + sx * r.centroid[1])
        extent = max((y1 - y0) * sy, (x1 - x0) * sx, 40.0) * 3.0
        cam.zoom = VIEW_PX / extent
        if not (keep_selection and self.current in {i.row() for i in self.table.selectionModel().selectedRows()}):
            self.table.clearSelection()
            self.table.selectRow(self.current)
        self._highlight(r, lab)
        return r

    def _highlight(self, r: Region, lab) -> None:
        """A yellow frame around the current region (a Shapes layer of its own)."""
        name = f"{self.image_picker.name} current region"
        y0, x0, y1, x1 = r.bbox
        pad = max(3, (max(y1 - y0, x1 - x0)) // 4)
        rect = np.array([[y0 - pad, x0 - pad], [y0 - pad, x1 + pad], [y1 + pad, x1 + pad], [y1 + pad, x0 - pad]],
                        float)
        for old in [ly for ly in self.viewer.layers if ly.name.endswith(" current region")
                    and ly.metadata.get("lesionseg") and ly.name != name]:
            self.viewer.layers.remove(old)  # another photo's frame
        if name in self.viewer.layers:
            self.viewer.layers[name].data = [rect]
        else:
            self.viewer.add_shapes([rect], shape_type="rectangle", name=name, edge_color="yellow",
                                   face_color="transparent", edge_width=max(2.0, pad / 3), scale=lab.scale,
                                   translate=lab.translate, metadata={"lesionseg": True})
            self.viewer.layers.selection.active = lab  # painting stays on the lesions layer

    def next(self) -> Region | None:
        return self.go(self.current + 1)

    def previous(self) -> Region | None:
        return self.go(self.current - 1 if self.current > 0 else -1)

    def target_rows(self) -> list[int]:
        """The rows an action applies to: every selected row when several are selected (click,
        then Shift- or Ctrl-click) and the current region is among them, else the current one."""
        if self.region() is None:
            return []
        rows = sorted({i.row() for i in self.table.selectionModel().selectedRows()})
        return rows if len(rows) > 1 and self.current in rows else [self.current]

    def _set_pixels(self, value_of: Callable[[Region], int | None], status: str, core: bool = False) -> None:
        """Paint ``value_of(region)`` (None: leave its pixels) into each target row's region and
        set its status; one step for Undo here and for napari's own Ctrl-Z."""
        rows = self.target_rows()
        if not rows or self.review is None:
            return
        lab, prob, _ = self._layers()
        others = self.session.type_maps(self.image_picker.name)
        p = others[self.kind()].probability if self.kind() in others else prob.data
        marks = self._marks()
        step: list[tuple[tuple[str, int, int], str]] = []
        painted = False
        with lab.block_history():  # through napari's edit history, all the rows as one edit
            for row in rows:
                r = self.review.regions[row]
                value = value_of(r)
                if value is not None:
                    pix = self.review.lesion_pixels(r, p) if core else self.review.pixels(r)
                    lab.data_setitem(np.nonzero(pix), value)
                    painted = True
                anchor = self._anchor(r, p)
                step.append((anchor, marks.get(anchor, "")))
                marks[anchor] = status
        self._show_statuses()
        self._undo.append((step, painted))
        self.session.decided(self.image_picker.name)
        if len(rows) > 1:
            self.info.setText(f"{status} {len(rows)} regions (Undo takes them back together)")

    def undo(self) -> None:
        """Take back the last Accept / Delete / Mark unsure (its pixels and its statuses)."""
        if not self._undo:
            self.info.setText("nothing to undo")
            return
        step, painted = self._undo.pop()
        layers = self._layers()
        if painted and layers is not None:
            layers[0].undo()
        marks = self._marks()
        for anchor, old_status in reversed(step):
            if old_status:
                marks[anchor] = old_status
            else:
                marks.pop(anchor, None)
        self._show_statuses()
        self.session.decided(self.image_picker.name)

    def accept(self) -> None:
        """Keep the region(s) as they are (a possible miss becomes a lesion: its core, see
        ``ReviewSet.lesion_pixels``)."""
        value = TYPE_VALUE[self.kind()]
        self._set_pixels(lambda r: value if r.kind == "fuzzy" else None, "accepted", core=True)

    def delete(self) -> None:
        self._set_pixels(lambda _r: 0, "deleted")

    def mark_unsure(self) -> None:
        self._set_pixels(lambda _r: UNSURE, "unsure")

    def open_next_image(self) -> str | None:
        """Open the project's next image (most uncertain first) with its prediction and latest
        correction; returns its id. The image shown before is saved if edited (at once) and its
        layers closed (memory); an image already open is switched to, never opened twice. The
        layers go and come one per turn of the event loop (``turns``; napari takes a noticeable
        part of a second for each, the viewer repaints between them): the button comes back
        when the image is shown."""
        proj = self.session.project
        if proj is None:
            self.info.setText(self.session.no_project_reason)
            return None
        if self.turns.busy:
            return None  # still opening the one before
        # the photo shown: the one under review, else the one this button opened (a photo with
        # no stored prediction has no lesions layer to review, and was never closed: each click
        # kept another full-size photo open)
        current = self.image_picker.name or (self._opened if self._opened in self.viewer.layers else "")
        if current:
            try:
                self._save_if_edited(current)  # first: a photo just corrected is passed over by the queue
            except (LesionsegInputError, OSError) as err:
                self._error(f"{current}: its edits could not be saved ({err}); it stays open")
                return None
        found = self.session.next_image(current or None, skip=self._unreadable)
        if found is None:
            self.info.setText(f"none of the project's photos can be opened ({len(self._unreadable)} could not be "
                              "read)" if self._unreadable else "the project holds no images yet")
            return None
        nxt, place, count, uncorrected, resumed = found
        steps: list[Callable[[], object]] = []
        if current and current != nxt:
            steps += [partial(self._remove_layer, name) for name in [*all_layer_names(current), current]]
            steps.append(partial(self.session.close_photo, current))
        if nxt not in self.viewer.layers:
            steps.append(partial(self._load_layers, proj, nxt))
        steps.append(partial(self._show_opened, proj, nxt, place, count, uncorrected, resumed))
        self.next_image_button.enabled = False
        self.turns.run(steps)
        return nxt

    def _on_layer_removed(self, event: Any) -> None:
        """A photo's lesions layer was deleted: its unsaved work is saved first, as Segment does
        (``keep_removed_work``), also with this dock opened alone."""
        keep_removed_work(self.session, event.value, self.info.setText, self._error)

    def _error(self, message: str) -> None:
        """In the dock's info line and as a napari notification."""
        from napari.utils.notifications import show_error

        if not self._released:
            self.info.setText(message)
            show_error(message)

    def _remove_layer(self, name: str) -> None:
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)

    def _load_layers(self, proj: Any, image_id: str) -> None:
        """Read the image's layers from the project; add them in the next turns. A photo that
        cannot be read (a damaged or missing file) is said, and passed over from then on: it
        once raised in the event loop at every click, and the queue never got past it."""
        try:
            layers = project_image_layers(proj, image_id)
        except (LesionsegInputError, OSError) as err:
            self.turns.clear()
            self._unreadable[image_id] = str(err)
            self._error(f"{image_id} cannot be opened, passed over ({err}); 'Open next image' opens the next photo")
            return
        self.turns.run_next([partial(self._add_layer, data, kwargs, kind) for data, kwargs, kind in layers])

    def _add_layer(self, data: Any, kwargs: dict[str, Any], kind: str) -> None:
        if kwargs["name"] not in self.viewer.layers:
            getattr(self.viewer, f"add_{kind}")(data, **kwargs)

    def _show_opened(self, proj: Any, nxt: str, place: int, count: int, uncorrected: int, resumed: bool) -> None:
        lname = layer_names(nxt)["lesions"]
        if lname in self.viewer.layers:
            self.session.open_photo(nxt, proj.image_path(nxt))
            self.session.shown(nxt, self.viewer.layers[lname].data)
            layers = self.viewer.layers
            if layers.index(lname) < len(layers) - 1:  # Segment brought the correction back first: the
                layers.move(layers.index(lname), len(layers))  # maps came over it (the mask under the fuzzy overlay)
            layers.selection.active = layers[lname]  # painting goes to it
        self._opened = nxt
        meta = self.viewer.layers[lname].metadata if lname in self.viewer.layers else {}
        restored, what = meta.get("restored_draft"), meta.get("restored_what", "hand edits")
        with contextlib.suppress(OSError):  # a read-only project: the next review starts at the queue's head
            proj.set_resume([nxt])  # a review opened again resumes here, corrected or not
        text = f"{nxt}: image {place} of {count} by uncertainty, " + ("where the last review stood; " if resumed else "")
        if restored:
            text += f"brought back {what} kept at {restored} and never saved (napari closed before); "
        text += (f"{uncorrected} without a saved correction (photos with one are passed over until none is left)"
                 if uncorrected else "every photo has a saved correction")
        already = self.image_picker.name == nxt  # chosen when its layer came (an empty box): listed then
        if already or self.image_picker.choose(nxt):  # choosing another photo lists it (_on_photo_switched)
            if already and self.review is None:
                self.refresh()
            elif already:  # listed as its layer came, before the project's other outputs were known
                self._sync_types()
            text += f". {self.info.text()}"  # the list's summary: how many are likely mistakes, where to stop
            text += self._older_model_note(proj, nxt)
        else:
            text += "; no prediction stored for it: run 'Segment lesions' on it to review it"
        self.info.setText(text)

    def _older_model_note(self, proj: Any, image_id: str) -> str:
        """A word when the stored prediction shown was made by another model than the one the
        docks now use (a version promoted since, mid-queue) and no correction replaces it."""
        photo = self.session.photos.get(image_id)
        stored = proj.prediction_settings(image_id).get("model_version")
        if not stored or photo is None or photo.saved is not None:
            return ""
        try:
            current = self.session.model_config().name
        except (LesionsegInputError, OSError):
            return ""
        return ("" if stored == current else f". Segmented by '{stored}', not by the current model '{current}': Run "
                                             "in Segment lesions segments it with the current one")

    def save_correction(self) -> Any:
        """Keep the photo's mask as a new version, edited or not (the annotator vouches for it:
        the queue passes over it from now on); returns the version."""
        name = self.image_picker.name
        if not name or layer_names(name)["lesions"] not in self.viewer.layers:
            self.info.setText("no lesions layer to save: open a photo with a prediction first")
            return None
        try:
            version = self._save(name, only_if_edited=False)
        except (LesionsegInputError, OSError) as err:
            self._error(f"{name}: could not be saved ({err})")
            return None
        if version is None:
            self.info.setText(f"{name}: nothing to save")
            return None
        self.info.setText(f"{name}: saved as version {version.version}; Open next image passes over it from now on")
        return version

    def _save_if_edited(self, name: str) -> None:
        """Before an image's layers go away, keep its hand edits as a new label version (the
        session's one rule: only when it differs from what was saved or shown)."""
        self._save(name, only_if_edited=True)

    def _save(self, name: str, *, only_if_edited: bool) -> Any:
        """The photo's lesions layer as a new version (None: no such layer, or nothing to save)."""
        lname = layer_names(name)["lesions"]
        if lname not in self.viewer.layers:
            return None
        if name in self.viewer.layers:
            open_layer_photo(self.session, self.viewer.layers[name])
        elif name not in self.session.photos:  # its photo's layer closed, and forgotten: nothing to save it against
            raise LesionsegInputError(None, "the photo's own layer is closed: open the photo again to save its mask")
        # else the session still holds the photo (its layer closed, its mask left): Save raised in the event loop
        return self.session.save_correction(name, self.viewer.layers[lname].data, only_if_edited=only_if_edited)

    def toggle_fuzzy(self) -> None:
        layers = self._layers()
        if layers is not None:
            layers[2].visible = not layers[2].visible


def _key(r: Region) -> tuple[str, int]:
    """A region's identity in its review set (its row moves when the list is cut anew)."""
    return r.kind, r.label


def camera(viewer: napari.Viewer):
    """The viewer's camera (``viewer.scene.camera`` since napari 0.9, ``viewer.camera`` before)."""
    scene = getattr(viewer, "scene", None)
    return getattr(scene, "camera", None) or viewer.camera
