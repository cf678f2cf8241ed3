"""Reading JSON files we did not write ourselves (model folders, project files), with limits;
writing ours as strict JSON.

Every problem is a :class:`LesionsegInputError` naming the file: a missing file, a folder or
a FIFO where a file should be (opened without blocking, so a FIFO can never hang the
reader), a symlink loop, more than ``max_bytes``, nesting deeper than ``max_depth``, numbers
with more than ``MAX_INT_DIGITS`` digits, invalid UTF-8 or JSON, and a top level that is not
an object.
"""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path
from typing import Any

from .errors import LesionsegInputError

MAX_JSON_BYTES = 2_000_000
MAX_DEPTH = 32
MAX_INT_DIGITS = 64


def read_regular_file(path: str | os.PathLike[str], max_bytes: int, what: str = "file") -> bytes:
    """The bytes of ``path`` if it is a regular file of at most ``max_bytes``."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise LesionsegInputError(p, f"{what} is missing") from None
    except OSError as err:
        raise LesionsegInputError(p, f"{what} cannot be opened ({err.strerror or err})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            raise LesionsegInputError(p, f"{what} is {kind}")
        if st.st_size > max_bytes:
            raise LesionsegInputError(p, f"{what} is too large ({st.st_size:,} bytes; at most {max_bytes:,})")
        chunks, size = [], 0
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            size += len(chunk)
            if size > max_bytes:  # grew while being read
                raise LesionsegInputError(p, f"{what} is too large (over {max_bytes:,} bytes)")
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as err:
        raise LesionsegInputError(p, f"{what} cannot be read ({err.strerror or err})") from None
    finally:
        os.close(fd)


def _depth(text: str) -> int:
    """Deepest bracket nesting outside strings (checked before parsing: the parser recurses)."""
    depth = best = 0
    in_str = esc = False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            best = max(best, depth)
        elif ch in "]}":
            depth -= 1
    return best


def _parse_int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"a number with {len(digits)} digits")
    return int(digits)


def parse_json(text: str, path: str | os.PathLike[str] | None, max_depth: int = MAX_DEPTH) -> Any:
    """Parse ``text`` within the depth and number limits."""
    # the character scan runs only where the nesting could be that deep (str.count is C-fast;
    # manifest lines and configs never get there)
    if text.count("[") + text.count("{") > max_depth and _depth(text) > max_depth:
        raise LesionsegInputError(path, f"JSON is nested more than {max_depth} levels deep")
    try:
        return json.loads(text, parse_int=_parse_int)
    except (json.JSONDecodeError, ValueError, RecursionError) as err:
        raise LesionsegInputError(path, f"is not valid JSON ({err})") from None


def read_json(path: str | os.PathLike[str], *, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_DEPTH,
              what: str = "file") -> dict[str, Any]:
    """A JSON object from ``path``, within the limits above."""
    data = read_regular_file(path, max_bytes, what)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise LesionsegInputError(path, f"{what} is not UTF-8 text") from None
    obj = parse_json(text, path, max_depth)
    if not isinstance(obj, dict):
        raise LesionsegInputError(path, "must hold a JSON object")
    return obj


def json_safe(v: Any) -> Any:
    """NaN and infinities as null, through nested dicts, lists and tuples (a score of an empty set
    is NaN; Python writes it as the bare word ``NaN``, which strict JSON readers reject)."""
    if isinstance(v, dict):
        return {k: json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    return None if isinstance(v, float) and not math.isfinite(v) else v


def json_text(obj: Any, **kwargs: Any) -> str:
    """``obj`` as strict JSON text (:func:`json_safe` first); ``kwargs`` go to ``json.dumps``."""
    return json.dumps(json_safe(obj), allow_nan=False, **kwargs)
