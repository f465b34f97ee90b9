"""Reading the market report back in tests: its PNGs, its markdown tables and numbers, and the
asset's metadata."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

DPI = 60  # small PNGs keep the tests fast; sizes are checked against figsize * dpi


def assert_png(path: Path, size_in: tuple[float, float], dpi: int) -> None:
    assert path.is_file() and path.stat().st_size > 1000, path
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size == (round(size_in[0] * dpi), round(size_in[1] * dpi)), (path, im.size)
        px = np.asarray(im.convert("RGB"))
    colours = np.unique(px.reshape(-1, 3), axis=0)
    assert len(colours) > 20, f"{path.name} looks blank ({len(colours)} colours)"
    assert px.std() > 5, f"{path.name} looks blank"


def report_metadata(result) -> dict:
    mats = result.asset_materializations_for_node("market_report")
    assert len(mats) == 1
    return mats[0].metadata


def md_table(text: str, heading: str) -> list[list[str]]:
    """The cells of the markdown table under `## heading` (header and rule rows dropped)."""
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("|")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]


def shows(text: str, value: float) -> bool:
    """`text` (as the report prints numbers: thousands separators, fixed decimals or %g) is
    `value` rounded to the digits shown."""
    t = text.replace(",", "").replace("%", "").strip()
    if "e" in t:
        return math.isclose(float(t), value, rel_tol=5e-4)
    decimals = len(t.split(".")[1]) if "." in t else 0
    return abs(float(t) - value) <= 0.5 * 10.0 ** -decimals * (1 + 1e-9)
