"""The console's assets ship inside the package (no CDN, no network at run time)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_console_assets_ship_inside_the_package():
    import service.ui

    static = Path(service.ui.__file__).parent / "static"
    for name in ("console.js", "console.css", "vendor/uPlot.iife.min.js",
                 "vendor/uPlot.min.css", "vendor/uPlot.LICENSE"):
        assert (static / name).is_file(), name
    page = (Path(service.ui.__file__).parent / "page.html").read_text()
    assert "http://" not in page and "https://" not in page  # no CDN
    script = (static / "console.js").read_text().replace("http://www.w3.org/2000/svg", "")
    assert "http://" not in script and "https://" not in script


def test_the_wheel_carries_the_console_assets():
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]
    assert {"ui/page.html", "ui/static/*", "ui/static/vendor/*"} <= set(package_data["service"])
