"""The lesion types (and the optic disc) a model may output, in IDRiD's names.

A model's ``network.outputs`` lists its output channels in order; hemorrhages (``HE``) are
always the first, so every HE-only consumer reads channel 0 and a model folder written before
other types existed (outputs = ["HE"]) works unchanged.
"""

from __future__ import annotations

HE = "HE"
OD = "OD"
LESION_TYPES = ("HE", "MA", "EX", "SE")  # hemorrhages, microaneurysms, hard and soft exudates
OUTPUT_TYPES = LESION_TYPES + ("OD",)  # ... and the optic disc
# values in a label map (a correction, the plugin's lesions layer): 0 background, 255 unsure
TYPE_VALUE = {"HE": 1, "MA": 2, "EX": 3, "SE": 4}
VALUE_TYPE = {v: t for t, v in TYPE_VALUE.items()}
LONG_NAMES = {"HE": "hemorrhage", "MA": "microaneurysm", "EX": "hard exudate", "SE": "soft exudate",
              "OD": "optic disc"}


def lesion_outputs(outputs: list[str] | tuple[str, ...]) -> list[str]:
    """The lesion types among a model's outputs (the optic disc is no lesion)."""
    return [t for t in outputs if t in LESION_TYPES]


def parse_types(text: str, available: list[str] | tuple[str, ...] | None = None) -> list[str]:
    """``"HE,MA"`` -> ``["HE", "MA"]`` (case-insensitive, order kept, duplicates dropped);
    ValueError naming an unknown type, or a type ``available`` (a model's outputs) lacks."""
    names = list(dict.fromkeys(t.strip().upper() for t in text.split(",") if t.strip()))
    if not names:
        raise ValueError("no lesion type named (choose from " + ", ".join(OUTPUT_TYPES) + ")")
    unknown = [t for t in names if t not in OUTPUT_TYPES]
    if unknown:
        raise ValueError(f"unknown lesion type {unknown[0]!r} (known: {', '.join(OUTPUT_TYPES)})")
    if available is not None:
        missing = [t for t in names if t not in available]
        if missing:
            raise ValueError(f"the model has no {missing[0]} output (it has: {', '.join(available)})")
    return names
