"""A real headless Chromium for the tests that open a page: found or explained, never silently skipped in CI.

`nox -s tests` installs Debian's ``chromium`` and ``chromium-driver`` when it runs as
root, and ``selenium`` with the test extras.  A developer's machine without them skips
the browser tests with the reason; under ``CI=true`` a missing browser fails the test
instead, so CI can never report a pass it did not check.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

# A profile of its own per test (`--user-data-dir`): two Chromiums on one profile hand over to each other and hang.
HEADLESS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run")
HINT = "apt-get install chromium chromium-driver && pip install selenium (`nox -s tests` installs them as root)"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def require_browser(driver: bool = True) -> tuple[str, str | None]:
    """The Chromium binary (and chromedriver, when ``driver``); skip outside CI, fail under ``CI=true``."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    missing = [] if chromium else ["chromium"]
    if driver:
        missing += [] if chromedriver else ["chromedriver"]
        missing += [] if importlib.util.find_spec("selenium") else ["selenium"]
    if missing:
        reason = f"the browser test needs {', '.join(missing)}: {HINT}"
        if in_ci():
            pytest.fail(f"CI=true, so not skipped: {reason}")
        pytest.skip(reason)
    assert chromium is not None
    return chromium, chromedriver


@contextmanager
def headless_chrome(download_dir: Path, width: int = 1280, height: int = 900) -> Iterator[Any]:
    """A selenium driver for a fresh headless Chromium profile that saves downloads into ``download_dir``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, chromedriver = require_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (*HEADLESS, f"--user-data-dir={download_dir.parent / 'chrome-profile'}"):
        options.add_argument(arg)
    options.add_argument(f"--window-size={width},{height}")
    prefs = {"download.default_directory": str(download_dir), "download.prompt_for_download": False}
    options.add_experimental_option("prefs", prefs)
    driver = _start(lambda: webdriver.Chrome(service=Service(executable_path=chromedriver), options=options))
    try:
        # Headless Chromium ignores the profile's download folder unless told through the DevTools protocol.
        driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(download_dir)})
        yield driver
    finally:
        driver.quit()


def _start(make: Callable[[], Any], tries: int = 3) -> Any:
    """The driver, retried: selenium gives chromedriver about 30 s to listen, which a loaded 2-core runner can miss."""
    from selenium.common.exceptions import WebDriverException

    for attempt in range(1, tries + 1):
        try:
            return make()
        except WebDriverException as e:
            if attempt == tries:
                raise
            print(f"starting chromedriver failed ({str(e).strip()[:120]}); try {attempt + 1} of {tries}")
    raise AssertionError("unreachable")


def artifact_path(name: str, fallback_dir: Path) -> Path:
    """Where a test keeps a file for people to look at: ``$CYCLEALIGN_TEST_ARTIFACTS``, else ``fallback_dir``."""
    root = Path(os.environ.get("CYCLEALIGN_TEST_ARTIFACTS") or fallback_dir)
    root.mkdir(parents=True, exist_ok=True)
    return root / name
