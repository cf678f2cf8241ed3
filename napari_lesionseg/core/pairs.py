"""Pairing images with their masks by file stem (for evaluation and training)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from .errors import LesionsegInputError
from .image_io import list_images, read_label, read_mask, subfolders
from .lesion_types import HE, LONG_NAMES, OUTPUT_TYPES, TYPE_VALUE

MASK_SUFFIXES = (".png", ".tif", ".tiff", ".bmp")
MASK_TAGS = ("HE", "mask", "label", "gt", "seg")  # <stem>_<tag> names a photo's mask
OTHER_TAGS = tuple(t for t in OUTPUT_TYPES if t != HE)  # <stem>_MA ...: a photo's mask of another type
OUTPUT_TAGS = ("prob", "fuzzy", "overlay")  # <stem>_prob ...: predict's and export's maps of a photo
INVERTED_SHARE = 0.5  # no fundus photo is mostly lesion (IDRiD's most: IDRiD_17, hemorrhage on 15 % of it)


@dataclass(frozen=True)
class Pair:
    """A photo and its mask. ``label_map``: the mask is a label map this package wrote (a
    corrections-store version, 255 = unsure), read exactly; otherwise it is someone's mask
    file, where a 0/255 file means lesion (see :func:`read_mask`)."""

    id: str
    image: Path
    mask: Path
    label_map: bool = False
    label_types: tuple[str, ...] = (HE,)  # the types a label map was reviewed for (the others: unknown)

    def read_mask(self, shape: tuple[int, int] | None = None) -> NDArray[np.uint8]:
        """The hemorrhage mask as 0 background, 1 lesion, 255 unsure (a label map's other
        types are background here; all 255 when it was not reviewed for hemorrhages)."""
        if not self.label_map:
            return read_mask(self.mask, shape=shape)
        return type_view(read_label(self.mask, shape=shape), HE, self.label_types)

    def knows(self, name: str) -> bool:
        """Whether this pair says anything about type ``name`` (a correction saved without
        reviewing hemorrhages is all 'unsure' for them: it has no hemorrhage score to give)."""
        if self.label_map:
            return name in self.label_types
        return name == HE or self.type_mask(name) is not None

    def read_checked_mask(self, shape: tuple[int, int] | None = None) -> NDArray[np.uint8]:
        """:meth:`read_mask`, refusing a mask that marks most of its photo as lesion: an
        inverted mask (lesions black on white) trained a model to call the whole fundus a
        lesion, without a word, and scored a model against it as if it were the truth (used by
        training, fine-tuning and ``evaluate``)."""
        return _not_inverted(self.read_mask(shape), self.mask)

    def read_type(self, name: str, shape: tuple[int, int]) -> NDArray[np.uint8] | None:
        """This photo's labels of type ``name`` (0/1/255), or None when the type is unknown
        for it (see :meth:`type_mask`; a label map speaks for ``label_types`` only)."""
        return self.read_types([name], shape)[name]

    def read_types(self, names: list[str] | tuple[str, ...], shape: tuple[int, int]
                   ) -> dict[str, NDArray[np.uint8] | None]:
        """:meth:`read_type` for several types; a label map is read once for all of them."""
        if self.label_map:
            lab = read_label(self.mask, shape=shape)
            return {n: type_view(lab, n, self.label_types) if n == HE or n in self.label_types else None
                    for n in names}
        return {n: self._read_other(n, shape) for n in names}

    def _read_other(self, name: str, shape: tuple[int, int]) -> NDArray[np.uint8] | None:
        if name == HE:
            return self.read_mask(shape)
        f = self.type_mask(name)
        if f is None:
            return None
        return _not_inverted(read_mask(f, shape=shape), f, LONG_NAMES[name]) if f.exists() else np.zeros(shape, np.uint8)

    def type_mask(self, name: str) -> Path | None:
        """Where this photo's mask of type ``name`` (MA, EX, SE, OD) lives, if the type is known
        for it; None when it is unknown. The path may not exist: the photo has none of the type.

        Known means: a file ``<stem>_<T>.*`` beside the hemorrhage mask, or, in IDRiD's layout
        (``masks_HE/``), a sibling folder ``masks_<T>/`` (IDRiD ships soft-exudate masks only
        for the photos that have them, so a photo without a file there has none). A plugin
        correction (``label_map``) holds its types in its own values: :meth:`read_type`."""
        if name == HE:
            return self.mask
        if self.label_map:
            return None
        folders = [self.mask.parent]
        idrid = self.mask.parent.name == f"masks_{HE}" and (self.mask.parent.parent / f"masks_{name}").is_dir()
        if idrid:
            folders.append(self.mask.parent.parent / f"masks_{name}")
        for folder in folders:
            for suffix in MASK_SUFFIXES:
                f = folder / f"{self.id}_{name}{suffix}"
                if f.exists():
                    return f
        return folders[-1] / f"{self.id}_{name}.tif" if idrid else None


def _not_inverted(mask: NDArray[np.uint8], path: Path, what: str = "lesion") -> NDArray[np.uint8]:
    """``mask``, unless it marks most of its photo (an inverted mask: lesions black on white;
    on IDRiD's 54 training photos the largest masks mark 14.9 % (hemorrhages), 6.6 % (hard
    exudates), 2.8 % (optic disc), 1.3 % (soft exudates) and 0.3 % (microaneurysms))."""
    share = float(np.count_nonzero(mask == 1)) / max(mask.size, 1)
    if share > INVERTED_SHARE:
        raise LesionsegInputError(path, f"marks {share:.0%} of the photo as {what}: is the mask inverted "
                                        f"({what}s must be white or 1 on black)?")
    return mask


def type_view(label: NDArray[np.uint8], name: str, reviewed: tuple[str, ...] | list[str]) -> NDArray[np.uint8]:
    """One type's 0/1/255 labels from a label map with a value per type (TYPE_VALUE): all 255
    when the map was not reviewed for ``name``."""
    if name not in reviewed:
        return np.full(label.shape, 255, np.uint8)
    out = (label == TYPE_VALUE[name]).view(np.uint8).copy()
    out[label == 255] = 255
    return out


def require_known_types(pairs: list[Pair], types: list[str] | tuple[str, ...], where: Path | None,
                        what: str, hint: str = "") -> list[str]:
    """The types among ``types`` that at least one pair says anything about (``Pair.knows``);
    none: a clear error at ``where``, saying which types the corrections do speak for (a
    project whose photos were reviewed for microaneurysms only has no hemorrhage to score a
    hemorrhage model by, nor to fine-tune it on). ``what``: what cannot be done ("nothing to
    score"); ``hint``: how to go on."""
    known = [t for t in types if any(p.knows(t) for p in pairs)]
    if known:
        return known
    spoken = sorted({t for p in pairs for t in OUTPUT_TYPES if p.knows(t)}, key=OUTPUT_TYPES.index)
    raise LesionsegInputError(where, f"none of the {len(pairs)} corrected photo(s) was reviewed for "
                                     f"{', '.join(types)}; they speak for {', '.join(spoken) or 'no lesion type'} "
                                     f"only: {what}" + (f"; {hint}" if hint else ""))


def marks_a_lesion(pair: Pair, outputs: list[str] | tuple[str, ...] = (HE,)) -> bool:
    """Whether ``pair`` marks at least one lesion pixel of a type among ``outputs`` that it
    was reviewed for (an inverted mask refused: ``Pair.read_checked_mask``)."""
    he = HE in outputs and pair.knows(HE)
    others = [t for t in outputs if t != HE and pair.knows(t)]
    if not (he or others):
        return False
    mask = pair.read_checked_mask()  # read once: its hemorrhages, and the photo's size for the others
    if he and (mask == 1).any():
        return True
    return any(m is not None and (m == 1).any() for m in pair.read_types(others, mask.shape).values())


def without_masks(files: list[Path]) -> list[Path]:
    """Photos among ``files`` (one folder's): a file named ``<stem>_<tag>`` beside a photo
    ``<stem>`` (``_HE``, ``_mask``, ``_MA``, ``_OD`` ...) is that photo's mask, not a photo; nor
    is what ``lesionseg predict`` wrote for it (``_prob``, ``_fuzzy``, ``_overlay``,
    ``_<T>_prob``, ``_<T>_mask``), so predicting a folder again into itself predicts its photos
    only. Nor are a photo's outputs without it (``<stem>_mask.png`` beside ``<stem>_prob.png``:
    an earlier run's output folder inside the folder now given)."""
    stems = {f.stem for f in files}
    outputs = {f.stem[: -len("_prob")] for f in files if f.stem.endswith("_prob") and f.suffix.lower() == ".png"}
    outputs &= {f.stem[: -len("_mask")] for f in files if f.stem.endswith("_mask") and f.suffix.lower() == ".png"}
    stems |= outputs  # the photo these were written for, elsewhere

    def is_mask(f: Path) -> bool:
        base, _, tag = f.stem.rpartition("_")
        if tag in MASK_TAGS + OTHER_TAGS + OUTPUT_TAGS and base in stems:
            return True
        photo, _, kind = base.rpartition("_")
        return tag in ("prob", "mask") and kind in OTHER_TAGS and photo in stems

    return [f for f in files if not is_mask(f)]


def _mask_files(folder: Path) -> list[Path]:
    return [f for f in sorted(folder.iterdir())
            if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in MASK_SUFFIXES + (".jpg", ".jpeg")]


def _mask_index(mask_dir: Path, below: bool = False) -> dict[str, list[Path]]:
    """The folder's mask files by name stem (more than one when only the suffix differs); with
    ``below`` and none in the folder itself, those in its subfolders (masks kept in patient
    folders as the photos are)."""
    files = _mask_files(mask_dir)
    if below and not files:
        files = [f for d in subfolders(mask_dir) for f in _mask_files(d)]
    out: dict[str, list[Path]] = {}
    for f in files:
        out.setdefault(f.stem, []).append(f)
    return out


def _photos(images: Path, masks: Path) -> tuple[list[Path], bool]:
    """The photos in ``images``, or, when it holds none itself, those in its subfolders (a
    clinic's patient folders; a masks folder inside it is not searched); and whether they came
    from the subfolders. Photos are paired with masks by name, so two of one name are refused."""
    photos = list_images(images)
    if photos:
        return photos, False
    photos = [f for d in subfolders(images, {masks.resolve()}) for f in list_images(d)]
    seen: dict[str, Path] = {}
    for f in photos:
        if f.stem in seen:
            a, b = (x.relative_to(images).as_posix() for x in (seen[f.stem], f))
            raise LesionsegInputError(images, f"holds two photos named {f.stem} in its subfolders ({a} and {b}): "
                                              "photos are paired with their masks by name; give each subfolder "
                                              "on its own, or rename one")
        seen[f.stem] = f
    return photos, True


def idrid_layout(root: str | Path) -> bool:
    """Whether ``root`` is laid out as IDRiD ships its segmentation set: ``images/`` beside
    ``masks_HE/`` (and ``masks_MA/``, ``masks_EX/`` ...)."""
    root = Path(root)
    return (root / "images").is_dir() and (root / f"masks_{HE}").is_dir()


def pairs_of(images: str | Path, masks: str | Path | None) -> list[Pair]:
    """The photos and masks a command is given: ``images`` with ``masks`` matched by stem, or,
    without ``masks``, an IDRiD-layout root (its photos without a hemorrhage mask, such as
    IDRiD_43, left out)."""
    if masks is not None:
        return match_pairs(Path(images), Path(masks))
    if not idrid_layout(images):
        raise LesionsegInputError(images, "give --masks too (the masks' folder), unless this is an IDRiD-layout "
                                          "folder (images/ beside masks_HE/)")
    return match_pairs(Path(images) / "images", Path(images) / f"masks_{HE}", allow_unmatched_images=True)


def match_pairs(images: Path, masks: Path, *, allow_unmatched_images: bool = False) -> list[Pair]:
    """Pair each image in ``images`` with its mask in ``masks`` by file stem. A folder of
    photos with none in itself is searched below (a clinic's patient folders), as is then a
    masks folder with none in itself.

    Raises LesionsegInputError listing the unmatched files (images without masks are allowed
    with ``allow_unmatched_images``, e.g. IDRiD_43 which has no hemorrhage mask).
    """
    for d in (images, masks):
        if not d.is_dir():
            raise LesionsegInputError(d, "is not a folder")
    photos, below = _photos(images, masks)
    idx = _mask_index(masks, below)
    # other types' masks (<stem>_MA ...) are not hemorrhage masks, nor photos, nor orphans
    type_names = {f"{img.stem}_{t}" for img in photos for t in OTHER_TAGS}
    photos = [img for img in photos if img.stem not in type_names]
    idx = {stem: f for stem, f in idx.items() if stem not in type_names}
    if images.resolve() == masks.resolve():
        # photos and masks side by side (as the bundled samples are): a file that is another
        # file's mask by name is a mask, not a photo, and a photo is never its own mask
        mask_names = {f"{img.stem}_{s}" for img in photos for s in MASK_TAGS}
        photos = [img for img in photos if img.stem not in mask_names]
        idx = {stem: f for stem, f in idx.items() if stem in mask_names}
    pairs, missing, twice = [], [], []
    used: set[str] = set()
    for img in photos:
        cands = [img.stem] + [f"{img.stem}_{s}" for s in MASK_TAGS]
        hit = next((c for c in cands if c in idx), None)
        if hit is None:
            missing.append(img.name)
            continue
        used.add(hit)
        if len(idx[hit]) > 1:  # IDRiD_04_HE.png and IDRiD_04_HE.tif: which one is meant is not ours to guess
            twice.append(" and ".join(f.name for f in idx[hit]))
        pairs.append(Pair(img.stem, img, idx[hit][0]))
    orphans = sorted(set(idx) - used)
    problems = []
    if twice:
        problems.append(f"one photo, two masks: {', '.join(twice[:5])}{' ...' if len(twice) > 5 else ''}; keep one")
    if missing and not allow_unmatched_images:
        problems.append(f"images without a mask: {', '.join(missing[:10])}" + (" ..." if len(missing) > 10 else ""))
    if orphans:
        problems.append(f"masks without an image: {', '.join(orphans[:10])}" + (" ..." if len(orphans) > 10 else ""))
    if problems:
        raise LesionsegInputError(masks, "; ".join(problems))
    if not pairs:
        raise LesionsegInputError(images, "no image/mask pairs found")
    return pairs
