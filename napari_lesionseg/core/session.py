"""The annotation session: the Qt-free state under the plugin's docks (ARCHITECTURE.md: a
Qt-free core the widgets only call), scriptable and tested without a viewer.

One :class:`AnnotationSession` per project (or none) holds, for each open photo, what the
model predicted, the mask the model made at the current threshold, the label map as last
saved (or brought back from the project) and so whether the annotator's label map is edited.
The widgets keep the label map in a napari Labels layer and pass it in; every button is one
call here. Long work is a generator of progress (:meth:`run`); disk work (:meth:`store`,
:meth:`save_correction`) never needs the GUI thread.

Rules an annotator can rely on:
- a new run never replaces hand edits: :meth:`accept_run` keeps the edited label map unless
  told to replace it (``replace_edits=True``);
- re-thresholding never replaces hand edits unless forced;
- a photo's correction is saved only when it differs from what was last saved;
- opening a photo the project knows brings back its latest correction.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Collection, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from .anatomy import Anatomy
from .bundled import default_model_dir
from .errors import LesionsegInputError
from .image_io import read_image
from .inference import Prediction, Progress, TypeMaps, predict
from .lesion_types import HE, LESION_TYPES, TYPE_VALUE, lesion_outputs
from .lesions import threshold_mask
from .model_config import ModelConfig
from .model_folder import LoadedModel, load_model_config, load_model_folder
from .registry import Registry
from .review import settings_metadata
from .segment_layers import composite_mask, layer_names, prediction_label, stored_label_map
from .segment_layers import labels_to_label_map as to_label_map
from .store import LabelVersion, Project


class Accepted(NamedTuple):
    """What :meth:`AnnotationSession.accept_run` gives: the label map to show, and whether it
    is the annotator's edited map (kept over the new prediction)."""

    label: NDArray[np.uint8]
    edits_kept: bool


class NextImage(NamedTuple):
    """What :meth:`AnnotationSession.next_image` gives: the image id, its 1-based place in the
    order of uncertainty, how many images the project holds, and how many of them have no
    saved correction (not counting unreadable ones)."""

    image_id: str
    place: int
    count: int
    uncorrected: int
    resumed: bool = False  # the photo the review last opened (Project.set_resume), not the queue's next


class EditsWouldBeLost(LesionsegInputError):
    """The label map was edited by hand and the call would replace it."""

    def __init__(self, name: str, action: str) -> None:
        super().__init__(None, f"the mask of {name} was edited by hand: {action} would replace the edits "
                               "(save them first, or confirm to discard them)")


def store_prediction(project: Project, image_id: str, pred: Prediction) -> Path:
    """Keep ``pred`` as the image's latest prediction in ``project``: its maps, its threshold
    and review settings, the disc and fovea, and every other output's maps (what the review
    queue ranks by and what *Review lesions* opens). One definition for the plugin's runs and
    ``lesionseg predict --project``."""
    return project.save_prediction(image_id, pred.model_version, pred.probability, pred.mask, pred.fuzzy,
                                   {**settings_metadata(pred.threshold, pred.review),
                                    "anatomy": pred.anatomy.to_dict()},
                                   {t: (m.probability, m.mask, m.threshold) for t, m in pred.others.items()})


@dataclass
class Photo:
    """One open photo. The label map itself lives in the widget's layer (the live copy); the
    photo holds what it is compared with."""

    name: str
    source: Path | None = None  # the file on disk (None: an array with no file our reader decodes)
    image_id: str | None = None  # its id in the project, once registered
    pixels: NDArray[np.uint8] | None = None  # RGB, for a photo without a source: what the project keeps
    prediction: Prediction | None = None
    auto_mask: NDArray[np.uint8] | None = None  # the model's 0/1 mask at the current threshold
    saved: NDArray[np.uint8] | None = None  # the label map as last saved (or read from the project)
    saved_version: int | None = None
    reviewed: set[str] = field(default_factory=lambda: {HE})  # lesion types the annotator vouches for
    stored_types: dict[str, TypeMaps] | None = None  # other outputs read from the project's prediction
    # Review's decisions, kept at a pixel of each region decided: (lesion type, y, x) -> "accepted",
    # "deleted" or "unsure"; shown while the pixel holds what the decision left there
    review_marks: dict[tuple[str, int, int], str] = field(default_factory=dict)
    saved_marks: dict[tuple[str, int, int], str] = field(default_factory=dict)  # as the saved version holds them
    saved_reviewed: set[str] = field(default_factory=lambda: {HE})  # the types the saved version was reviewed for
    # hand edits kept by the project as a draft (napari closed or crashed before they were saved),
    # made on the saved version: shown instead of it once, as unsaved edits
    draft: NDArray[np.uint8] | None = None
    draft_kept_at: str = ""
    draft_what: str = "hand edits"  # what the draft brought back (Draft.what): the docks say it
    draft_restored: bool = False  # a run showed the draft (accept_run): the dock says so once

    @property
    def decided_since_saved(self) -> bool:
        """Review decisions (marks, or a type ticked as checked) the saved version does not hold
        (every type unticked is no decision to save: a correction is reviewed for one at least)."""
        return self.review_marks != self.saved_marks or (bool(self.reviewed) and self.reviewed != self.saved_reviewed)

    @property
    def reference(self) -> NDArray[np.uint8] | None:
        """What "unedited" means: the saved label map, else the model's mask."""
        return self.saved if self.saved is not None else self.auto_mask


@dataclass
class AnnotationSession:
    """The state of one annotation session (see the module's text)."""

    project_dir: Path | None = None
    model_dir: Path | None = None  # None: the project's active model, else the shipped default
    device: str = "cpu"
    photos: dict[str, Photo] = field(default_factory=dict)
    project_listeners: list[Callable[[Path | None], object]] = field(default_factory=list, repr=False)
    # called before the project changes, the old one still set (the docks save unsaved work into it)
    project_leaving_listeners: list[Callable[[], object]] = field(default_factory=list, repr=False)
    active_model_listeners: list[Callable[[Path], object]] = field(default_factory=list, repr=False)
    # called with a photo's name when its Review decisions or reviewed types changed (no pixel
    # need change: an Accept paints nothing): the viewer keeps them in the draft (keep_drafts)
    decision_listeners: list[Callable[[str], object]] = field(default_factory=list, repr=False)
    warned_unkept: bool = False  # the annotator was told that edits with no project are not kept
    resumed: bool = False  # the project's review started where the last one stood (next_image)
    _model: LoadedModel | None = field(default=None, repr=False)
    _model_device: str = field(default="", repr=False)
    _project: Project | None = field(default=None, repr=False)
    _project_problem: str | None = field(default=None, repr=False)

    # ---- project and model -------------------------------------------------------------------
    @property
    def project(self) -> Project | None:
        """The project, or None when no folder is set or the folder cannot be one (a file, a
        folder that cannot be created: ``no_project_reason`` says which)."""
        if self.project_dir is None:
            return None
        if self._project is None or self._project.root != self.project_dir:
            try:
                self._project = Project(self.project_dir)
            except LesionsegInputError as err:
                self._project_problem = str(err)
                return None
            self._project_problem = None
        return self._project

    @property
    def no_project_reason(self) -> str:
        """Why there is no project to save to, in words for the dock."""
        if self.project_dir is not None and self.project is None and self._project_problem:
            return f"the project folder cannot be used: {self._project_problem}"
        return "choose a project folder first"

    def set_project(self, folder: str | os.PathLike[str] | None) -> None:
        """Use ``folder`` for corrections, predictions and model versions (one setting for all
        docks); the model follows the project's active version unless one was chosen. ``~``
        is the user's home, as in a shell (a typed ``~/proj`` made a folder named ``~``)."""
        new = Path(folder).expanduser() if folder else None
        if new == self.project_dir:
            return
        for leaving in list(self.project_leaving_listeners):
            leaving()
        self.project_dir = new
        self._project = None
        self._model = None if self.model_dir is None else self._model
        self.resumed = False  # the new project's review resumes where it stood
        for photo in self.photos.values():
            self._rebind(photo)
        for listener in list(self.project_listeners):
            listener(new)

    def _rebind(self, photo: Photo) -> None:
        """Photo ``photo`` as the project now set sees it: its id there (found by content, as on
        opening), and that project's latest correction if it holds one; else what was shown
        stays what "unedited" means (the correction of the project before, not saved in this
        one). The id of the project before was kept: a save went to whichever photo held that
        id in the new project (another photo of the same file name), or failed ("no image with
        id ...; add it first")."""
        shown, marks, reviewed = photo.reference, photo.review_marks, photo.reviewed
        photo.image_id, photo.saved, photo.saved_version = None, None, None  # its maps (stored_types) are the ones shown
        photo.review_marks, photo.saved_marks, photo.reviewed, photo.saved_reviewed = {}, {}, {HE}, {HE}
        if self.project is not None:
            with contextlib.suppress(LesionsegInputError, OSError):  # said where it matters: Save, Open
                self.open_photo(photo.name)
        if photo.saved is None:  # not corrected in this project: what was shown is no edit
            if shown is not None and shown is not photo.auto_mask:
                photo.saved = shown  # with no version here (saved_version None)
            photo.review_marks, photo.saved_marks = marks, dict(marks)
            photo.reviewed, photo.saved_reviewed = reviewed, set(reviewed)

    def set_model(self, folder: str | os.PathLike[str] | None) -> None:
        """Use the model folder ``folder`` (None: the project's active one, else the default)."""
        self.model_dir = Path(folder) if folder is not None else None
        self._model = None

    def activated(self, folder: Path) -> None:
        """The project's active model changed (Promote, or an older version made active): the
        session follows it, and so do the docks listening."""
        self.set_model(folder)
        for listener in list(self.active_model_listeners):
            listener(folder)

    def model_path(self) -> Path:
        if self.model_dir is not None:
            return self.model_dir
        if self.project_dir is not None:
            return Registry(self.project_dir).active()
        return default_model_dir()

    def model(self) -> LoadedModel:
        """The current model, loaded on first use (a promoted version is picked up at once:
        the path is asked for every time)."""
        path = self.model_path()
        if self._model is None or self._model.path != path or str(self._model_device) != self.device:
            self._model = load_model_folder(path, self.device)
            self._model_device = self.device
        return self._model

    # ---- photos ------------------------------------------------------------------------------
    def open_photo(self, name: str, source: str | os.PathLike[str] | None = None,
                   pixels: Callable[[], NDArray[np.uint8]] | None = None) -> Photo:
        """Register an open photo; with a project that holds it (same file content; for a photo
        without a ``source``, the same ``pixels()``: its RGB, asked for once), its latest
        correction becomes the saved label map, to be shown."""
        photo = self.photos.get(name)
        if photo is None:
            photo = self.photos[name] = Photo(name, Path(source) if source else None)
        elif source and photo.source is None:
            photo.source = Path(source)
        if photo.source is None and photo.pixels is None and pixels is not None:
            photo.pixels = pixels()
        proj = self.project
        if proj is not None and photo.saved is None and (photo.source is not None or photo.pixels is not None):
            iid = (proj.find_image(photo.source) if photo.source is not None
                   else proj.find_pixels(photo.pixels, name))  # type: ignore[arg-type]
            if iid is not None:
                photo.image_id = iid
                fresh = photo.review_marks  # decided in this session before the project knew the photo
                hit = proj.latest_with_label(iid)
                if hit is not None:
                    photo.saved_version, photo.saved = hit[0].version, hit[1]
                    photo.reviewed = set(proj.label_types(hit[0]))
                    photo.saved_reviewed = set(photo.reviewed)
                    photo.saved_marks = proj.review_marks(hit[0])
                    photo.review_marks = {**photo.saved_marks, **fresh}
                found = proj.current_draft(iid, photo.saved_version)
                if found is not None:  # work napari closed (or crashed) before it was saved
                    photo.draft_kept_at, photo.draft_what = found.kept_at, found.what
                    if found.edited:
                        photo.draft = found.label
                    if found.marks is not None:  # every decision then, saved ones and undone ones included
                        photo.review_marks = {**found.marks, **fresh}
                    if found.types:
                        photo.reviewed = set(found.types)
        return photo

    def lesion_types(self) -> list[str]:
        """The lesion types the current model outputs (hemorrhages only for today's default):
        the values a label map holds (core/lesion_types.py TYPE_VALUE)."""
        return lesion_outputs(self.model_config().network.outputs)

    def model_config(self) -> ModelConfig:
        """The current model's config: the loaded model's, else read from its folder (no weights
        loaded to learn its outputs, threshold or name)."""
        path = self.model_path()
        if self._model is not None and self._model.path == path:
            return self._model.config
        return load_model_config(path)

    def photo_types(self, name: str) -> list[str]:
        """The lesion types whose values photo ``name``'s label map holds: the model's, those of
        the photo's prediction (run here, else stored in the project) and any its saved
        correction or shown mask holds. A photo segmented with the five-output model keeps its
        microaneurysms and exudates under a hemorrhage-only model (they were saved as
        hemorrhages); a label value of none of them (napari's "new label") is a hemorrhage."""
        types = set(self.lesion_types())
        photo = self.photos.get(name)
        if photo is not None:
            proj = self.project
            if photo.prediction is not None:
                types |= set(photo.prediction.others)
            elif photo.image_id is not None and proj is not None:
                stored = proj.prediction_settings(photo.image_id).get("types")
                types |= set(stored) if isinstance(stored, dict) else set()
            for ref in (photo.saved, photo.auto_mask):
                if ref is not None:
                    types |= {t for t in LESION_TYPES if t not in types and bool((ref == TYPE_VALUE[t]).any())}
        return [t for t in LESION_TYPES if t in types]

    def label_map(self, label: NDArray, name: str) -> NDArray[np.uint8]:
        """The label map a save of ``label`` (the lesions layer's data) for photo ``name`` keeps:
        a value of none of the photo's types is a hemorrhage (:meth:`photo_types`)."""
        return to_label_map(label, self.photo_types(name))

    def set_reviewed(self, name: str, types: list[str] | set[str]) -> None:
        """The lesion types the annotator has reviewed on photo ``name`` (saved with its next
        correction; a type not reviewed teaches a fine-tune nothing about the photo)."""
        photo = self.photos.get(name) or self.open_photo(name)
        photo.reviewed = set(types) & set(LESION_TYPES)
        self.decided(name)

    def decided(self, name: str) -> None:
        """Photo ``name``'s Review decisions (``Photo.review_marks``) or reviewed types changed:
        the listeners hear it (the viewer keeps unsaved decisions in the photo's draft)."""
        for listener in list(self.decision_listeners):
            listener(name)

    def shown(self, name: str, label: NDArray) -> None:
        """``label`` is what is shown for a photo that has neither a saved correction nor a run
        here (e.g. a stored prediction's mask): edits are measured against it."""
        photo = self.photos.get(name) or self.open_photo(name)
        lab = self.label_map(label, name)
        if photo.draft is not None and np.array_equal(lab, photo.draft):
            photo.draft = None  # the draft is shown (project_image_layers): unsaved edits, not the reference
            return
        if photo.saved is None and photo.auto_mask is None:
            photo.auto_mask = lab

    def model_mask(self, name: str) -> NDArray[np.uint8] | None:
        """The label map the model made for photo ``name`` (before any hand edit): this
        session's run at its threshold, else the mask shown from the project's stored
        prediction, else that prediction read back (a saved correction is shown instead); None
        when there is no model mask to tell the annotator's edits by."""
        photo = self.photos.get(name)
        if photo is None:
            return None
        if photo.auto_mask is not None:
            return photo.auto_mask
        proj = self.project
        if proj is None or photo.image_id is None:
            return None
        return stored_label_map(proj, photo.image_id)

    def close_photo(self, name: str) -> None:
        self.photos.pop(name, None)

    def forget_closed(self, open_layers: Collection[str]) -> list[str]:
        """Forget the photos that neither their own layer nor their lesions layer shows among
        ``open_layers`` (the viewer's layer names), and return their names: each held its
        prediction's full-size maps until napari closed, photo after photo (the bundled
        five-output model: 130 MB more for each 2144x1424 sample photo segmented and closed). A
        lesions layer left alone still needs its photo (edits are measured against it); a photo
        opened again reads its correction back from the project."""
        gone = [n for n in self.photos if n not in open_layers and layer_names(n)["lesions"] not in open_layers]
        for name in gone:
            self.close_photo(name)
        return gone

    def rename_photo(self, old: str, new: str) -> None:
        """The photo shown as ``old`` is now called ``new`` (its layer was renamed); a photo
        closed under ``new`` before is forgotten."""
        photo = self.photos.pop(old, None)
        if photo is not None:
            photo.name = new
            self.photos[new] = photo

    def is_edited(self, name: str, label: NDArray) -> bool:
        """True when ``label`` differs from the photo's saved label map (or, never saved, from
        the model's mask). A photo with neither has no edits to lose."""
        ref = self._reference(name)
        if ref is None:
            return False
        return not np.array_equal(self.label_map(label, name), ref)

    def unsaved(self, name: str, label: NDArray) -> bool:
        """True when photo ``name`` holds work its saved version does not: ``label`` edited
        (:meth:`is_edited`), or Review decisions made since (an accepted lesion paints nothing; a
        lesion type ticked as checked, none found)."""
        photo = self.photos.get(name)
        return self.is_edited(name, label) or (photo is not None and photo.decided_since_saved)

    def _reference(self, name: str) -> NDArray[np.uint8] | None:
        """What the edits of photo ``name`` are measured against: its saved label map, else
        the model's mask, else (a photo the project opened, no run here) the mask of its stored
        prediction, read once. Without that last, edits made on a stored prediction shown by
        another way than *Open next image* (File > Open on the project) counted as none, and
        switching away or closing napari did not keep them."""
        photo = self.photos.get(name)
        if photo is None:
            return None
        if photo.reference is None and photo.image_id is not None:
            photo.auto_mask = self.model_mask(name)
        return photo.reference

    # ---- running the model ---------------------------------------------------------------------
    def run(self, name: str, rgb: NDArray[np.uint8] | None = None, *, threshold: float | None = None,
            precision: str = "auto") -> Generator[Progress, None, Prediction]:
        """Segment the photo ``name`` (its ``rgb``, else its source file); yields per-tile
        progress, returns the prediction. Nothing the annotator made is touched: the result
        is applied by :meth:`accept_run`."""
        photo = self.photos.get(name) or self.open_photo(name)
        if rgb is None:
            if photo.source is not None:
                rgb, _ = read_image(photo.source)
            elif photo.pixels is not None:
                rgb = photo.pixels
            else:
                raise LesionsegInputError(None, f"{name}: no pixels and no source file to segment")
        try:
            pred = yield from predict(self.model(), rgb, device=self.device, threshold=threshold, precision=precision)
        except LesionsegInputError as err:
            raise err.naming(name) from None  # a problem in the photo's pixels (a blank capture) names it
        return pred

    def accept_run(self, name: str, pred: Prediction, label: NDArray | None = None, *,
                   replace_edits: bool = False) -> Accepted:
        """Take a finished run's prediction; returns the label map to show and whether it is
        the annotator's edited ``label``, kept (unless ``replace_edits``)."""
        photo = self.photos.get(name) or self.open_photo(name)
        edited = label is not None and self.is_edited(name, label)
        photo.prediction = pred
        photo.auto_mask = prediction_label(pred)
        if edited and not replace_edits:
            return Accepted(self.label_map(label, name), True)
        if photo.draft is not None and not replace_edits and photo.draft.shape == photo.auto_mask.shape:
            draft, photo.draft = photo.draft, None  # edits not saved before napari closed: shown as such
            photo.draft_restored = True
            return Accepted(draft.copy(), True)
        if photo.saved is not None and not replace_edits:
            return Accepted(photo.saved.copy(), False)  # a saved correction outranks the model's new guess
        return Accepted(photo.auto_mask.copy(), False)

    def rethreshold(self, name: str, threshold: float, label: NDArray | None = None, *,
                    force: bool = False, probability: NDArray | None = None) -> NDArray[np.uint8]:
        """The model's mask at ``threshold`` from the stored probability (no model run): this
        session's run, else ``probability`` (a prediction stored in the project, shown with the
        photo; its other types keep their stored masks). Raises :class:`EditsWouldBeLost` when
        ``label`` is edited, unless ``force``."""
        photo = self.photos.get(name)
        if photo is None or (photo.prediction is None and probability is None):
            raise LesionsegInputError(None, f"{name}: run the segmentation first")
        if label is not None and not force and self.is_edited(name, label):
            raise EditsWouldBeLost(name, "re-thresholding")
        pred = photo.prediction
        min_area = self.model_config().inference.min_lesion_area
        if pred is not None:
            photo.auto_mask = prediction_label(pred, threshold_mask(pred.probability, threshold, min_area))
        else:
            assert probability is not None
            others = self.type_maps(name)
            photo.auto_mask = composite_mask(threshold_mask(probability, threshold, min_area),
                                             {t: m.mask for t, m in others.items()},
                                             lambda t: probability if t == HE else others[t].probability)
        return photo.auto_mask.copy()

    # ---- disk ----------------------------------------------------------------------------------
    def _registered(self, photo: Photo) -> tuple[Project, str]:
        proj = self.project
        if proj is None:
            raise LesionsegInputError(None, self.no_project_reason)
        if photo.image_id is None:
            if photo.source is not None:
                photo.image_id = proj.add_image(photo.source)
            elif photo.pixels is not None:
                photo.image_id = proj.add_pixels(photo.pixels, photo.name)
            else:
                raise LesionsegInputError(None, f"'{photo.name}' has no source file and no pixels to keep")
        return proj, photo.image_id

    def store(self, name: str) -> Path | None:
        """Keep the photo's prediction in the project (orders the review by uncertainty)."""
        photo = self.photos[name]
        pred = photo.prediction
        if pred is None or self.project is None or (photo.source is None and photo.pixels is None):
            return None
        proj, iid = self._registered(photo)
        return store_prediction(proj, iid, pred)

    def type_maps(self, name: str) -> dict[str, TypeMaps]:
        """The other outputs (MA, EX, SE, OD) of the photo's prediction: from this session's
        run, else from the prediction stored in the project (read once; without their lesion
        tables), else none."""
        photo = self.photos.get(name)
        if photo is None:
            return {}
        if photo.prediction is not None:
            return photo.prediction.others
        if photo.stored_types is None:
            proj = self.project
            stored = proj.prediction_types(photo.image_id) if proj is not None and photo.image_id else {}
            photo.stored_types = {t: TypeMaps(p, m, thr, []) for t, (p, m, thr) in stored.items()}
        return photo.stored_types

    def anatomy(self, name: str) -> Anatomy | None:
        """The disc, fovea and round field of the photo's prediction: from this session's run,
        else as stored with its latest prediction in the project (None: neither), so a photo
        not run here still has its lesions placed."""
        photo = self.photos.get(name)
        if photo is None:
            return None
        if photo.prediction is not None:
            return photo.prediction.anatomy
        proj = self.project
        if proj is None or photo.image_id is None:
            return None
        raw = proj.prediction_settings(photo.image_id).get("anatomy")
        return Anatomy.from_dict(raw) if raw is not None else None

    def save_correction(self, name: str, label: NDArray, *, only_if_edited: bool = False) -> LabelVersion | None:
        """Append ``label`` as the photo's new version (with the model's hemorrhage mask for
        provenance) and the Review dock's decisions, reviewed for the photo's ``reviewed``
        types plus every type whose pixels the annotator changed or decided on. With ``only_if_edited``
        nothing is written when it equals what was last saved and no decision was made since
        (:meth:`unsaved`)."""
        photo = self.photos.get(name) or self.open_photo(name)
        types = self.photo_types(name)
        lab = to_label_map(label, types)
        ref = self._reference(name)
        if only_if_edited and (ref is None or (np.array_equal(lab, ref)  # is_edited, the types read once
                                               and not photo.decided_since_saved)):
            return None
        proj, iid = self._registered(photo)
        pred = photo.prediction
        touched = {t for t in types
                   if ref is not None and not np.array_equal(lab == TYPE_VALUE[t], ref == TYPE_VALUE[t])}
        decided = {t for t, _y, _x in photo.review_marks if t in types}  # an Accept paints nothing, a Delete does
        photo.reviewed |= touched | decided
        v = proj.save_label(iid, lab, model_version=pred.model_version if pred else None,
                            model_mask=None if photo.auto_mask is None else photo.auto_mask == TYPE_VALUE[HE],
                            types=sorted(photo.reviewed, key=LESION_TYPES.index), marks=photo.review_marks)
        photo.saved, photo.saved_version, photo.saved_marks = lab, v.version, dict(photo.review_marks)
        photo.saved_reviewed = set(photo.reviewed)
        photo.draft = None
        with contextlib.suppress(OSError):  # the version is saved; a draft left is older than it, dropped when read
            proj.drop_draft(iid)
        return v

    def draft_job(self, name: str, label: NDArray) -> Callable[[], None] | None:
        """What keeps photo ``name``'s hand edits (``label``, the lesions layer's data) against a
        crash: a call that writes them as the project's draft of the photo when they differ from
        its saved version (or the model's mask), or removes its draft when they do not; None
        without a project that holds the photo. Here only ``label`` is copied (the layer's array:
        napari paints it in place) and what it is measured against looked up; the label map is
        made, compared and written by the call, on another thread (made here, it held the GUI
        thread 150 ms for an IDRiD photo with an "unsure" pixel: benchmarks/draft_keep.py).
        Review's decisions and the types ticked as reviewed go into the draft with the pixels
        (an Accept paints nothing): kept too when they are all there is to keep."""
        photo, proj = self.photos.get(name), self.project
        if photo is None or proj is None or photo.image_id is None:
            return None
        iid, base, ref = photo.image_id, photo.saved_version, self._reference(name)
        data = np.array(label, copy=True)
        marks, reviewed, decided = dict(photo.review_marks), set(photo.reviewed), photo.decided_since_saved

        def keep() -> None:
            lab = self.label_map(data, name)
            edited = ref is not None and not np.array_equal(lab, ref)  # is_edited
            if edited or decided:
                proj.save_draft(iid, lab, base, edited=edited, marks=marks, types=reviewed)
            else:
                proj.drop_draft(iid)

        return keep

    def next_image(self, current: str | None = None, skip: Collection[str] = ()) -> NextImage | None:
        """The project's next image to review after ``current``, in the order of uncertainty
        (most uncertain first, wrapping round), passing over the ids in ``skip`` (photos that
        could not be opened) and, while another photo has none, photos with a saved correction (a
        batch reviewed over several days opened at the photos done the day before; to pass a
        photo found right, save it unchanged); None when there is none to open. With nothing
        ``current`` the first time (a review starting), the photo the review last opened comes
        first (``Project.set_resume``): one left half-reviewed, its edits saved on closing
        napari, was passed over as corrected."""
        proj = self.project
        if proj is None:
            return None
        order = [iid for iid, _ in proj.images_by_uncertainty()]
        photo = self.photos.get(current) if current else None
        cur = photo.image_id if photo is not None and photo.image_id else current
        open_ = [iid for iid in order if iid not in skip and not proj.versions(iid)]
        if cur is None and not self.resumed:  # once: a photo closed by hand later is not opened again
            self.resumed = True
            resume = [iid for iid in proj.resume_ids() if iid in order and iid not in skip]
            if resume:
                return NextImage(resume[0], order.index(resume[0]) + 1, len(order), len(open_), True)
        wanted = (set(open_) - {cur}) or set(order) - set(skip)
        start = order.index(cur) + 1 if cur in order else 0
        for k in range(len(order)):
            i = (start + k) % len(order)
            if order[i] in wanted:
                return NextImage(order[i], i + 1, len(order), len(open_))
        return None
