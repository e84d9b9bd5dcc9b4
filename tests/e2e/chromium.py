"""A real headless Chromium driven by selenium, for the tests that need a browser (the page, the attacks).

Tests skip, saying why, where no Chromium, chromedriver or selenium can be had (`.ci/run`
installs Debian's chromium and chromium-driver when it runs as root).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
# What Chromium needs on these machines: no sandbox as root, no proxy (the tests' names are
# mapped to local servers), and no background traffic towards an internet it cannot reach.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-proxy-server",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
)


def chromium_paths() -> tuple[str, str]:
    """Paths of Chromium and chromedriver, or skip saying what is missing."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.skip("selenium is not installed (pip install -r requirements-dev.txt)")
    browser = os.environ.get("P2P_CHROMIUM") or next(filter(None, map(shutil.which, CHROMIUM_NAMES)), None)
    driver = os.environ.get("P2P_CHROMEDRIVER") or shutil.which("chromedriver")
    if not browser or not driver:
        pytest.skip(
            "no headless browser here: apt-get install -y chromium chromium-driver "
            "(or set P2P_CHROMIUM and P2P_CHROMEDRIVER)"
        )
    return browser, driver


@contextlib.contextmanager
def chromium(*flags: str) -> Iterator:
    """A selenium driver of a fresh headless Chromium (its own profile), with extra command-line flags."""
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = chromium_paths()
    profile = tempfile.mkdtemp(prefix="p2p-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (*CHROMIUM_FLAGS, *flags, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        try:
            driver = webdriver.Chrome(service=Service(driver_path), options=options)
        except WebDriverException as err:
            pytest.skip(f"{binary} did not start under {driver_path}: {err.msg}")
        try:
            yield driver
        finally:
            driver.quit()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
