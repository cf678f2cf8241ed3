"""Reading fundus photographs and masks, writing lossless label maps.

Every failure raises :class:`LesionsegInputError` naming the file and the problem.
Images come back as RGB ``uint8`` arrays of shape ``(H, W, 3)`` (EXIF orientation applied);
masks as ``uint8`` arrays of shape ``(H, W)`` with 0 = background, 1 = lesion,
255 = unsure / ignore.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import struct
import warnings
import zlib
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps, UnidentifiedImageError

from .atomic import atomic_open
from .errors import LesionsegInputError

try:  # Intel ISA-L's deflate: faster than zlib at level 1 on our maps, files as small (benchmarks/README.md)
    from isal import isal_zlib as _deflate
except ImportError:  # pragma: no cover - a platform without isal wheels: the standard zlib
    _deflate = zlib  # type: ignore[assignment]

#: Default upper bound on width x height; above it an image is refused (decompression bombs).
DEFAULT_MAX_PIXELS = 150_000_000
IGNORE_LABEL = 255
LABEL_VALUES = (0, 1, 2, 3, 4, IGNORE_LABEL)  # background, HE, MA, EX, SE (core/lesion_types.py), unsure
LABEL_VALUES_TEXT = "label values must be 0 (background), 1 (HE), 2 (MA), 3 (EX), 4 (SE) or 255 (unsure)"
LOSSLESS_SUFFIXES = (".png", ".tif", ".tiff", ".bmp")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
#: a phone's photos: Pillow reads them through the optional pillow-heif plugin (:func:`heif_ready`)
HEIF_SUFFIXES = (".heic", ".heif")
#: what a folder's photos are: ``IMAGE_SUFFIXES`` (a project keeps such a file as it is) and the
#: other photo formats Pillow reads (a project keeps their pixels); HEIC/HEIF are listed whether
#: or not the plugin is installed, so that without it they fail with a word instead of being
#: passed over in silence
PHOTO_SUFFIXES = IMAGE_SUFFIXES + (".jpe", ".jfif", ".webp", ".jp2", ".j2k", ".avif") + HEIF_SUFFIXES
NOT_READ = ("not a recognised image file (expected JPEG, PNG, TIFF, BMP, WebP, JPEG 2000, AVIF or HEIC)")
HEIF_MISSING = ("a HEIC/HEIF photo (a phone's format): reading it needs pillow-heif "
                "(pip install \"napari-lesionseg[heic]\"), or export it as JPEG or PNG")


@functools.cache
def heif_ready() -> bool:
    """Can Pillow open HEIC/HEIF here? The optional pillow-heif plugin (the ``heic`` extra) is
    registered with Pillow on first need; False when it is not installed."""
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


@dataclass(frozen=True)
class ImageMeta:
    """What was read: source path, original size, mode and bit depth, and file hash."""

    path: str
    width: int
    height: int
    mode: str
    format: str
    bit_depth: int
    exif_orientation: int
    sha256: str


def path_problem(path: Path) -> str | None:
    """Why ``path`` is no image file to read at all (missing, a folder), else None."""
    if not path.exists():
        return "no such file"
    if path.is_dir():
        return (f"is a directory, not an image file (it holds no {'/'.join(IMAGE_SUFFIXES)} files)"
                if not any(f.suffix.lower() in PHOTO_SUFFIXES for f in path.iterdir())
                else "is a directory, not an image file")
    return None


def _read_bytes(path: Path) -> bytes:
    problem = path_problem(path)
    if problem is not None:
        raise LesionsegInputError(path, problem)
    try:
        data = path.read_bytes()
    except PermissionError:
        raise LesionsegInputError(path, "cannot be read (permission denied)") from None
    except OSError as err:
        raise LesionsegInputError(path, f"cannot be read ({err.strerror or err})") from None
    if not data:
        raise LesionsegInputError(path, "file is empty (0 bytes)")
    return data


def _open(path: Path, data: bytes, max_pixels: int) -> Image.Image:
    heif = path.suffix.lower() in HEIF_SUFFIXES
    if heif and not heif_ready():
        raise LesionsegInputError(path, HEIF_MISSING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as err:
            raise LesionsegInputError(path, f"image is too large to decode safely ({err})") from None
        except UnidentifiedImageError:
            raise LesionsegInputError(path, "a HEIC/HEIF photo that cannot be decoded" if heif else NOT_READ) from None
        except OSError as err:
            raise LesionsegInputError(path, f"cannot be decoded: {err}") from None
    w, h = im.size
    if w < 1 or h < 1:
        raise LesionsegInputError(path, f"image has no pixels ({w}x{h})")
    _check_pixels(path, w, h, max_pixels)
    return im


def _check_pixels(path: Path, w: int, h: int, max_pixels: int) -> None:
    if w * h > max_pixels:
        raise LesionsegInputError(
            path,
            f"image is {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,} "
            "(a possible decompression bomb; raise max_pixels if the image is genuine)",
        )


def _load(path: Path, im: Image.Image) -> Image.Image:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im.load()
        except (OSError, SyntaxError, ValueError) as err:
            raise LesionsegInputError(path, f"image data is truncated or corrupt ({str(err).strip()})") from None
    return im


def _tiff_array(path: Path, data: bytes) -> NDArray | None:
    """Fallback decoder for TIFFs Pillow cannot turn into RGB (16-bit colour, float)."""
    try:
        import tifffile
    except ImportError:  # pragma: no cover - tifffile is a dependency
        return None
    try:
        return np.asarray(tifffile.imread(io.BytesIO(data)))
    except Exception as err:  # noqa: BLE001 - any decoder failure is a bad file
        raise LesionsegInputError(path, f"TIFF cannot be decoded ({err})") from None


TIFF_MAGIC = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")  # classic and BigTIFF, either byte order


def _pillow_opens(data: bytes) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)):
                return True
        except Exception:  # noqa: BLE001 - any failure: Pillow cannot take it
            return False


def _read_tiff_only(p: Path, data: bytes, max_pixels: int) -> tuple[NDArray[np.uint8], ImageMeta]:
    """A TIFF that Pillow cannot open (float32 or other sample formats it lacks), by tifffile."""
    arr = _tiff_array(p, data)
    if arr is None:  # pragma: no cover - tifffile is a dependency
        raise LesionsegInputError(p, NOT_READ)
    rgb = to_rgb_uint8(arr, p)  # (tifffile has decoded it already: the limit is checked on what it gave)
    _check_pixels(p, rgb.shape[1], rgb.shape[0], max_pixels)
    return rgb, ImageMeta(path=str(p), width=rgb.shape[1], height=rgb.shape[0], mode=str(arr.dtype), format="TIFF",
                          bit_depth=arr.dtype.itemsize * 8, exif_orientation=1,
                          sha256=hashlib.sha256(data).hexdigest())


def to_rgb_uint8(arr: NDArray, path: Path | None = None) -> NDArray[np.uint8]:
    """Turn a decoded array or a napari layer's data (gray, gray+alpha, RGB, RGBA; any numeric
    dtype) into RGB uint8: the one rule for files and layers (16-bit scaled by 65535, 8-bit
    values kept, floats by their maximum when it is over 1; fully transparent pixels black)."""
    if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[-1] not in (1, 2, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # planar TIFF
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 2, 3, 4):
        raise LesionsegInputError(path, f"unsupported image layout with shape {arr.shape}")
    if arr.dtype.kind not in "fuib":
        raise LesionsegInputError(path, f"unsupported sample type {arr.dtype} (expected integers or floats)")
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise LesionsegInputError(path, "image contains NaN or infinite values")
        hi = float(arr.max()) if arr.size else 1.0
        scale = 1.0 if hi <= 1.0 else hi
        arr = np.clip(arr / scale, 0.0, 1.0) * 255.0 + 0.5
        arr = arr.astype(np.uint8)
    elif arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype.kind in "ui" and arr.dtype.itemsize > 1:
        bits = 16 if arr.max(initial=0) > 255 or arr.dtype.itemsize == 2 else 8
        arr = (np.clip(arr, 0, 2**bits - 1).astype(np.float64) * (255.0 / (2**bits - 1)) + 0.5)
        arr = arr.astype(np.uint8)
    else:
        arr = arr.astype(np.uint8, copy=False)
    channels = arr.shape[-1]
    # fully transparent pixels are black, the fundus's own surround: a photo cut out with a
    # transparent surround kept whatever colour lay under it (white: 15 of a photo's 25 lesions
    # were found); partly transparent ones keep their colour, as napari shows them
    arr = clear_as_black(arr)
    if channels in (1, 2):
        arr = np.repeat(arr[..., :1], 3, axis=-1)
    elif channels == 4:
        arr = arr[..., :3]
    return np.ascontiguousarray(arr)


def clear_as_black(arr: NDArray) -> NDArray:
    """``arr`` (H, W, C) with its fully transparent pixels 0 in every channel when its last
    channel is an alpha (C = 2 or 4) that is 0 somewhere but not everywhere (an alpha of 0
    everywhere is an unused channel some writers leave, not a cut-out); else ``arr`` itself."""
    if arr.shape[-1] in (2, 4) and (clear := arr[..., -1] == 0).any() and not clear.all():
        arr = arr.copy()
        arr[clear] = 0
    return arr


def decodable(path: str | os.PathLike[str]) -> bool:
    """Whether :func:`read_image` can take ``path``'s format (its header is read, not its
    pixels): False for a missing file, a folder, or a format only another napari plugin reads
    (DICOM, microscopy formats)."""
    try:
        with Image.open(path):
            return True
    except (OSError, ValueError, Image.DecompressionBombError):  # UnidentifiedImageError is an OSError
        pass
    try:  # a TIFF Pillow cannot open (float32): read_image decodes it with tifffile
        with open(path, "rb") as f:
            return f.read(4) in TIFF_MAGIC
    except OSError:
        return False


def napari_misread(path: str | os.PathLike[str], shape: tuple[int, ...], rgb: bool) -> str | None:
    """What napari's own reader got wrong in a photo layer of ``shape`` (``rgb``: shown as
    colour) read from ``path``, or None: a CMYK JPEG arrives as RGBA (the inks as colours,
    the black ink as opacity: a mostly transparent, inverted photo) and a planar TIFF, colour
    stored plane by plane, as three gray slices. :func:`read_image` reads both as the RGB
    photo; only the file's header is read here."""
    if not ((rgb and len(shape) == 3 and shape[-1] == 4)
            or (not rgb and len(shape) == 3 and shape[0] in (3, 4) and shape[-1] > 4)):
        return None
    try:
        with Image.open(path) as im:
            fmt, mode = im.format, im.mode
    except (OSError, ValueError, Image.DecompressionBombError):
        fmt, mode = ("TIFF", _tiff_photometric(path)) if decodable(path) else (None, None)  # tifffile's only
    if rgb and mode == "CMYK":
        return "a CMYK JPEG, which napari shows as RGBA (inverted colours, mostly transparent)"
    if not rgb and fmt == "TIFF" and mode in ("RGB", "RGBA"):  # not a stack of gray slices
        return "a TIFF with its colours stored plane by plane, which napari shows as three gray slices"
    return None


def _tiff_photometric(path: str | os.PathLike[str]) -> str | None:
    """"RGB" when a TIFF's first page holds colour (tifffile's reading), else None."""
    try:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            return "RGB" if tif.pages[0].photometric == tifffile.PHOTOMETRIC.RGB else None
    except Exception:  # noqa: BLE001 - any failure: not a colour TIFF we can tell
        return None


def exif_orientation(path: str | os.PathLike[str]) -> int:
    """The EXIF orientation of an image file (1: as stored; 2-8: :func:`read_image` flips or
    turns the pixels as the tag says), from its header; 1 when it has none or cannot be read."""
    try:
        with Image.open(path) as im:
            value = int(im.getexif().get(0x0112, 1) or 1)
    except (OSError, ValueError, Image.DecompressionBombError):
        return 1
    return value if 1 <= value <= 8 else 1


def _bit_depth(im: Image.Image) -> int:
    return {"1": 1, "I;16": 16, "I;16B": 16, "I;16L": 16, "I": 32, "F": 32}.get(im.mode, 8)


def read_image(
    path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[NDArray[np.uint8], ImageMeta]:
    """Read a photograph as RGB.

    Returns ``(rgb, meta)``: ``rgb`` is ``uint8`` of shape ``(H, W, 3)`` after EXIF
    orientation; gray is replicated, alpha dropped, palette expanded, CMYK converted, 16-bit
    and float scaled to 0..255.
    """
    p = Path(path)
    data = _read_bytes(p)
    if data[:4] in TIFF_MAGIC and not _pillow_opens(data):  # e.g. a float32 RGB TIFF
        return _read_tiff_only(p, data, max_pixels)
    im = _open(p, data, max_pixels)
    fmt = im.format or "?"
    bit_depth = _bit_depth(im)
    orientation = int(im.getexif().get(0x0112, 1) or 1)
    im = _load(p, im)
    arr: NDArray
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im)
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise LesionsegInputError(p, "image contains NaN or infinite values")
    elif fmt == "TIFF" and im.mode not in ("1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "YCbCr"):
        arr = _tiff_array(p, data)  # type: ignore[assignment]
    else:
        try:
            ImageOps.exif_transpose(im, in_place=True)  # a copy of a 12-MP photo (30 ms) when it has no turn
        except Exception:  # noqa: BLE001 - a broken EXIF block should not lose the image
            pass
        if im.mode not in ("L", "RGB"):
            im = im.convert("RGBA" if "A" in im.mode or im.mode == "P" else "RGB")
        arr = np.asarray(im)
    if fmt == "TIFF" and arr is not None and arr.ndim == 3 and arr.shape[-1] > 4:
        arr = _tiff_array(p, data)  # type: ignore[assignment]
    rgb = to_rgb_uint8(arr, p)
    meta = ImageMeta(
        path=str(p),
        width=rgb.shape[1],
        height=rgb.shape[0],
        mode=im.mode,
        format=fmt,
        bit_depth=bit_depth,
        exif_orientation=orientation,
        sha256=hashlib.sha256(data).hexdigest(),
    )
    return rgb, meta


def _colour_mask_problem(rgb: NDArray) -> str:
    """What is wrong with a colour mask, and, for black with one colour (lesions drawn in red,
    an annotation tool's class colour), how to save it: the colour is not guessed to be a
    lesion, as a several-class mask could hold one class only on this photo."""
    c8 = rgb.astype(np.uint32)
    colours = np.unique((c8[..., 0] << 16) | (c8[..., 1] << 8) | c8[..., 2])  # one number a colour: fast
    if len(colours) == 2 and colours[0] == 0:
        c = (int(colours[1]) >> 16, (int(colours[1]) >> 8) & 255, int(colours[1]) & 255)
        return (f"mask is a colour image, black and one colour {c}; expected one channel: if {c} marks the lesion, "
                "save the mask as one channel (gray) with lesions 255 and the rest 0")
    return "mask is a colour image with differing channels; expected one channel"


def _palette_indices(im: Image.Image) -> NDArray:
    """A palette mask's indices, as IDRiD stores its masks (0 black, 1 red). With two indices in
    use and black the higher one (an editor's palette: lesion red at 0, black at 1), black is
    read as 0 and the other colour as 1: the indices' order was refused as an inverted mask."""
    arr = np.asarray(im)
    used = np.unique(arr)
    pal = im.getpalette() or []
    if len(used) == 2 and len(pal) >= 3 * (int(used[1]) + 1):
        black = [int(i) for i in used if pal[3 * int(i):3 * int(i) + 3] == [0, 0, 0]]
        if black == [int(used[1])]:
            return (arr != used[1]).astype(np.uint8)
    return arr


def _read_gray(p: Path, shape: tuple[int, int] | None, max_pixels: int) -> NDArray:
    """One-channel array of a lossless mask or label file, size-checked against ``shape``."""
    if p.suffix.lower() in (".jpg", ".jpeg"):
        raise LesionsegInputError(
            p, "masks must be lossless (PNG, TIFF or BMP); JPEG compression alters mask values"
        )
    data = _read_bytes(p)
    im = _open(p, data, max_pixels)
    if im.format == "JPEG":
        raise LesionsegInputError(
            p, "file holds JPEG data; masks must be lossless (PNG, TIFF or BMP)"
        )
    im = _load(p, im)
    if im.mode in ("CMYK", "YCbCr", "LAB", "HSV"):  # a CMYK mask's C, M and Y are 0: read as empty
        im = im.convert("RGB")
    if im.mode == "P":
        arr = _palette_indices(im)
    elif im.mode == "1":
        arr = np.asarray(im).astype(np.uint8)
    else:
        arr = np.asarray(im)
        if arr.ndim == 3:
            if arr.shape[-1] in (2, 4):  # gray or colour with alpha (a gray+alpha mask was a traceback);
                arr = clear_as_black(arr)[..., :-1]  # lesions painted on a transparent layer: clear is background
            if not (arr == arr[..., :1]).all():
                raise LesionsegInputError(p, _colour_mask_problem(arr))
            arr = arr[..., 0]
    if shape is not None and tuple(arr.shape) != tuple(shape):
        raise LesionsegInputError(
            p,
            f"mask is {arr.shape[1]}x{arr.shape[0]} but its image is {shape[1]}x{shape[0]}",
        )
    # Pillow's array view is read-only: shown as a napari Labels layer (a saved correction
    # opened by Open next image), every brush stroke failed ("assignment destination is read-only")
    return arr if arr.flags.writeable else arr.copy()


def read_gray_u8(path: str | os.PathLike[str]) -> NDArray[np.uint8]:
    """An 8-bit one-channel map as written by ``encode_png`` (probability, mask), unchanged."""
    p = Path(path)
    arr = _read_gray(p, None, DEFAULT_MAX_PIXELS)
    if arr.dtype != np.uint8:
        raise LesionsegInputError(p, f"expected an 8-bit map, got {arr.dtype}")
    return np.ascontiguousarray(arr)


def read_unit_map(path: str | os.PathLike[str]) -> NDArray[np.float32]:
    """A one-channel map written by ``encode_png`` as floats in [0, 1]: an 8-bit PNG holds
    ``round(255 v)``, a 16-bit one (the fuzzy map) ``round(65535 v)``."""
    p = Path(path)
    arr = _read_gray(p, None, DEFAULT_MAX_PIXELS)
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / np.float32(255.0)
    if arr.dtype in (np.uint16, np.int32) and arr.min(initial=0) >= 0 and arr.max(initial=0) <= 65535:
        return arr.astype(np.float32) / np.float32(65535.0)  # Pillow opens 16-bit gray PNG as int32 "I"
    raise LesionsegInputError(p, f"expected an 8- or 16-bit one-channel map, got {arr.dtype}")


def _values_text(vals: set[int]) -> str:
    return ", ".join(str(v) for v in sorted(vals)[:8]) + (" ..." if len(vals) > 8 else "")


def read_mask(
    path: str | os.PathLike[str],
    *,
    shape: tuple[int, int] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> NDArray[np.uint8]:
    """Read a lesion mask someone made, as ``uint8 (H, W)`` with values in {0, 1, 255}.

    Accepted encodings: 1-bit / palette TIFF with indices {0, 1} (IDRiD; a two-colour palette
    with black at the higher index is read by colour, black the background), 0/1 or 0/255 PNG
    (255 then means lesion), and label maps holding 0, 1 and 255 (255 = unsure, ignored); gray
    stored as RGB, CMYK or with alpha (fully clear pixels are background), 16-bit or float.
    A file holding only 0 and 255 is read as a 0/255 *lesion* mask: label maps this package
    wrote itself (where 255 is "unsure") are read with :func:`read_label`, which never guesses.
    JPEG is refused: its compression invents values along every edge. ``shape`` is the
    ``(H, W)`` of the image the mask belongs to; a different size is an error.
    """
    p = Path(path)
    arr = _read_gray(p, shape, max_pixels)
    vals = {int(v) for v in np.unique(arr)}
    if vals <= {0, 1}:
        out = arr.astype(np.uint8)
    elif vals <= {0, 255} or vals <= {0, 65535}:
        out = (arr > 0).astype(np.uint8)
    elif vals <= {0, 1, 255}:
        out = arr.astype(np.uint8)
    elif len(vals) == 2 and 0 in vals:  # one other value: lesion, or one class of a class-index mask?
        v = max(vals)
        raise LesionsegInputError(
            p, f"mask holds only 0 and {v}; lesions must be 255 or 1 (it may be one class of a mask with several): "
               f"if {v} marks the lesion, save the mask with {v} as 255"
        )
    else:
        raise LesionsegInputError(
            p, f"mask has values other than 0/1/255 ({_values_text(vals)}); cannot tell lesion from background"
        )
    return np.ascontiguousarray(out)


def read_label(
    path: str | os.PathLike[str],
    *,
    shape: tuple[int, int] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> NDArray[np.uint8]:
    """Read a label map exactly as written: 0 background, 1-4 a lesion type (1 hemorrhage),
    255 unsure; any other value is an error. Unlike :func:`read_mask` nothing is reinterpreted, so a map holding only
    0 and 255 (background and unsure) stays so."""
    p = Path(path)
    arr = _read_gray(p, shape, max_pixels)
    return check_label_values(arr, p)


def check_label_values(label: NDArray, path: str | os.PathLike[str] | None = None) -> NDArray[np.uint8]:
    """``label`` as a 2-D ``uint8`` array, checked *before* any cast: every value must be
    exactly 0, a lesion type's value (1 HE, 2 MA, 3 EX, 4 SE: core/lesion_types.py) or 255
    (booleans are 0/1). 256, -1 or 0.7 are errors, never wrapped or truncated into a
    valid-looking value."""
    arr = np.asarray(label)
    if arr.ndim != 2:
        raise LesionsegInputError(path, f"a label map must be 2-D, got shape {arr.shape}")
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8)
    if arr.dtype.kind not in "uif":
        raise LesionsegInputError(path, f"a label map must hold numbers, got dtype {arr.dtype}")
    if arr.dtype != np.uint8:
        ok = np.isin(arr, LABEL_VALUES)
        if not ok.all():
            bad = {float(v) if arr.dtype.kind == "f" else int(v) for v in np.unique(arr[~ok])[:8]}
            raise LesionsegInputError(path, f"{LABEL_VALUES_TEXT}; found {sorted(bad)[:5]}")
        return arr.astype(np.uint8)
    vals = {int(v) for v in np.unique(arr)}
    bad = vals - set(LABEL_VALUES)
    if bad:
        raise LesionsegInputError(path, f"{LABEL_VALUES_TEXT}; found {sorted(bad)[:5]}")
    return np.ascontiguousarray(arr)


def _check_lossless(path: Path) -> None:
    if path.suffix.lower() in (".jpg", ".jpeg"):
        raise LesionsegInputError(
            path,
            "labels are written lossless only; JPEG would blur label values along every edge "
            "(use .png or .tif)",
        )
    if path.suffix.lower() not in LOSSLESS_SUFFIXES:
        raise LesionsegInputError(path, f"unsupported label format {path.suffix!r} (use .png or .tif)")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(arr: NDArray[np.uint8] | NDArray[np.uint16]) -> bytes:
    """Encode a ``uint8`` gray ``(H, W)`` or RGB ``(H, W, 3)`` array as an 8-bit PNG, or a
    ``uint16`` gray ``(H, W)`` array as a 16-bit gray PNG.

    Written directly (filter "none", deflate level 1 by ISA-L where installed, else zlib;
    both faster than Pillow's encoder, benchmarks/README.md), and both release the GIL, so
    several maps encode in parallel threads."""
    a = np.asarray(arr)
    ok8 = a.dtype == np.uint8 and (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3))
    if not (ok8 or (a.dtype == np.uint16 and a.ndim == 2)):
        raise ValueError(f"encode_png takes uint8 (H, W) or (H, W, 3), or uint16 (H, W), got {a.dtype} {a.shape}")
    h, w = a.shape[:2]
    ch = 1 if a.ndim == 2 else 3
    depth = 8 * a.dtype.itemsize
    row = w * ch * a.dtype.itemsize
    raw = np.zeros((h, 1 + row), np.uint8)  # a leading 0 on every row: filter type "none"
    if depth == 16:
        # filter "sub" (each byte minus the same byte of the pixel to its left): a smooth map's
        # low bytes then compress (6 MB instead of 9 MB for a full IDRiD fuzzy map, in 70 ms)
        b = a.astype(">u2", copy=False).view(np.uint8).reshape(h, row)
        raw[:, 0] = 1
        raw[:, 1:3] = b[:, :2]
        np.subtract(b[:, 2:], b[:, :-2], out=raw[:, 3:])
    else:
        raw[:, 1:] = a.reshape(h, row)
    header = struct.pack(">IIBBBBB", w, h, depth, 0 if ch == 1 else 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", _deflate.compress(raw.data, 1)) + _png_chunk(b"IEND", b""))


def write_label(path: str | os.PathLike[str], label: NDArray) -> None:
    """Write a label map (values 0..255) losslessly and atomically; JPEG is refused."""
    p = Path(path)
    _check_lossless(p)
    arr = np.asarray(label)
    if arr.ndim != 2:
        raise LesionsegInputError(p, f"a label map must be 2-D, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise LesionsegInputError(p, "label values must lie in 0..255")
        arr = arr.astype(np.uint8)
    fmt = {".png": "PNG", ".bmp": "BMP"}.get(p.suffix.lower(), "TIFF")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format=fmt)
    with atomic_open(p) as fh:
        fh.write(buf.getvalue())


def subfolders(folder: Path, skip: Collection[Path] = ()) -> Iterator[Path]:
    """``folder``'s subfolders at any depth, in sorted order, lazily (hidden ones and those in
    ``skip``, resolved paths, not entered)."""
    for dirpath, dirnames, _files in os.walk(folder):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and (here / d).resolve() not in skip)
        if here != folder:
            yield here


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files directly in ``folder`` (``PHOTO_SUFFIXES``; sorted, hidden and temp files skipped)."""
    d = Path(folder)
    return sorted(
        f for f in d.iterdir()
        if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in PHOTO_SUFFIXES
    )
