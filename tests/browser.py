"""Headless Debian Chromium for the browser tests, through playwright (which never downloads a browser here)."""

from __future__ import annotations

import os
import shutil

import pytest


def chromium_path() -> str:
    """The chromium executable; skips the test when it (or playwright) is missing, fails instead when
    COLORLAB_REQUIRE_BROWSER=1 (set by .ci/run, which installs Chromium)."""
    missing = (pytest.fail if os.environ.get("COLORLAB_REQUIRE_BROWSER") == "1" else pytest.skip)
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing("needs playwright (pip install -e '.[dev]')")
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        missing("needs Debian's chromium (apt-get install chromium)")
    return path


def launch(playwright):
    return playwright.chromium.launch(executable_path=chromium_path(), headless=True, args=["--no-sandbox"])
