"""The report in a real browser: headless Chromium at desktop and phone widths.

Runs where Debian's chromium is installed (.ci/run installs it); skipped elsewhere.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from test_report import _result
from finexl.report.html import write_html

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")


def screenshot(page, out, width: int, height: int, profile) -> Image.Image:
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}",
         f"--window-size={width},{height}", f"--screenshot={out}", page.as_uri()],
        check=True, capture_output=True, timeout=120)
    return Image.open(out).convert("RGB")


@pytest.mark.parametrize(("width", "height"), [(1280, 1600), (390, 1800)])
def test_report_renders_at_desktop_and_phone_width(tmp_path, width, height):
    page = write_html(_result(tmp_path, ["dark", "dim", "warm", "zorblax"]), tmp_path / "r.html")
    shot = screenshot(page, tmp_path / f"shot{width}.png", width, height, tmp_path / "profile")
    pixels = np.asarray(shot, dtype=np.float64)
    assert shot.size == (width, height)
    # Something was drawn: text, bars and thumbnails, not a blank page.
    assert pixels.std() > 20
    # The accent colour of the weight bars is on screen.
    accent = np.array([0x35, 0x59, 0xE0])
    assert (np.abs(pixels - accent).sum(axis=2) < 60).sum() > 50
