"""The explorer in a real browser: headless Chromium, driven by Selenium through ChromeDriver, opens the
page served from a tiny model, types two sentences into Interpolate and finds the path in the page.

Needs Debian's `chromium` and `chromium-driver` and the `selenium` package (the dev extra). Where they are
missing the test is skipped with the command that installs them; under CI (CI=true, where .ci/run
installs them) it fails instead, so that a browser test that silently stopped running cannot pass.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
from urllib.parse import urlparse

import pytest

pytest.importorskip("gradio", reason="the explorer needs gradio: pip install -e '.[dev]'")

INSTALL = "apt-get install -y chromium chromium-driver (as root), and pip install -e '.[dev]' for selenium"
WAIT_S = 60  # the longest any single wait of this test may last
START, END = "the cat sat on the mat", "a dog ran under the rug"


def _find_browser() -> tuple[str, str]:
    """(chromium, chromedriver) paths; skip, or fail under CI, when either or selenium is missing."""
    import importlib.util

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    found = {"chromium": chromium, "chromedriver": driver, "selenium": importlib.util.find_spec("selenium")}
    missing = [name for name, where in found.items() if where is None]
    if not missing:
        return chromium, driver
    message = f"no headless browser test: {', '.join(missing)} not found; {INSTALL}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def browser():
    chromium, driver_path = _find_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1000",
        "--disable-background-networking",  # nothing of Chromium's own either: updates, sync, ...
        "--disable-component-update",
        "--no-first-run",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})  # every request the page makes
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(WAIT_S)
    driver.set_script_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def served(trained_run):
    """The explorer of the tiny run on 127.0.0.1 and a free port: (url, its Explorer); stopped after."""
    from textvae.app.page import build_app, launch_app

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = build_app(trained_run, device="cpu")
    try:
        _, url, _ = launch_app(app, "127.0.0.1", port, block=False, quiet=True)
        yield url, app.explorer
    finally:
        app.close()


def table_rows(driver, elem_id: str) -> list[list[str]]:
    from selenium.webdriver.common.by import By

    rows = driver.find_elements(By.CSS_SELECTOR, f"#{elem_id} [role=row].virtual-row")
    return [[cell.text for cell in row.find_elements(By.CSS_SELECTOR, "[role=gridcell]")] for row in rows]


def test_interpolate_in_a_real_browser(browser, served):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, explorer = served
    from selenium.common.exceptions import StaleElementReferenceException

    wait = WebDriverWait(browser, WAIT_S, ignored_exceptions=(StaleElementReferenceException,))
    browser.get(url)
    wait.until(lambda driver: driver.find_elements(By.ID, "tab-interpolate-button"))
    browser.find_element(By.ID, "tab-interpolate-button").click()
    browser.find_element(By.CSS_SELECTOR, "#interpolate-end textarea").send_keys(END)
    browser.find_element(By.ID, "interpolate-run").click()  # no first sentence yet: the page says so

    # The toast's element can exist a moment before its text is rendered: wait for the text itself.
    def toast_texts(driver):
        texts = [element.text for element in driver.find_elements(By.CSS_SELECTOR, ".toast-message-text")]
        return [text for text in texts if text.strip()]

    toasts = wait.until(toast_texts)
    assert any("first sentence is empty" in text for text in toasts), toasts
    assert "Traceback" not in browser.page_source

    browser.find_element(By.CSS_SELECTOR, "#interpolate-start textarea").send_keys(START)
    browser.find_element(By.ID, "interpolate-run").click()
    expected = explorer.interpolate(START, END, 8, "lerp")  # the page's defaults: 8 steps, lerp
    wait.until(lambda driver: len(table_rows(driver, "interpolate-path")) == len(expected))
    shown = table_rows(browser, "interpolate-path")
    assert [int(row[0]) for row in shown] == [row[0] for row in expected]
    assert [float(row[1]) for row in shown] == [row[1] for row in expected]  # t: 0, 0.143, ..., 1
    assert [row[2] for row in shown] == [row[2] for row in expected]  # the decoded sentences
    assert [float(row[3]) for row in shown] == [row[3] for row in expected]

    png = browser.get_screenshot_as_png()
    from matplotlib.image import imread

    pixels = imread(io.BytesIO(png), format="png")  # (H, W, 3 or 4) floats in [0, 1]
    assert png.startswith(b"\x89PNG") and pixels.shape[0] > 500 and pixels.shape[1] > 1000
    drawn = (pixels[..., :3] < 0.9).any(axis=-1).mean()  # share of pixels that are not (near) white
    assert 0.01 < drawn < 0.9, f"the screenshot looks blank ({drawn:.1%} drawn)"

    requests = [json.loads(entry["message"])["message"] for entry in browser.get_log("performance")]
    hosts = {
        urlparse(message["params"]["request"]["url"]).hostname
        for message in requests
        if message["method"] == "Network.requestWillBeSent"
        and not message["params"]["request"]["url"].startswith(("data:", "blob:"))
    }
    assert hosts == {"127.0.0.1"}, f"the page reached beyond its server: {hosts}"
