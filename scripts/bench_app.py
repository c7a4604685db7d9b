"""Response times of the explorer (`textvae serve`): sample (n = 10) and interpolate (8 steps).

Serves the run on 127.0.0.1 and a free port and times each request three ways, `--repeats` times each
(median, fastest, slowest, in ms): the tab's function in-process (`Explorer`, no HTTP), a call through
gradio_client (HTTP and gradio's queue, as the page makes it), and, with Selenium and Debian's
chromium + chromium-driver, a click in headless Chromium until the table shows the result. With
`--screenshot PNG` it saves the Interpolate tab with its path (and `--map-screenshot PNG`, the latent map).

    python scripts/bench_app.py runs/ptb --corpus ../shared/data/ptb/valid.txt --screenshot explorer.png
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import torch

from textvae.app.explorer import AppLimits
from textvae.app.page import build_app, launch_app

DEFAULT_START = "the company said it expects to report a loss for the third quarter"
DEFAULT_END = "he declined to comment on the report"


def summary(seconds: list[float]) -> str:
    ms = [1000 * value for value in seconds]
    return (
        f"median {statistics.median(ms):7.0f} ms  (fastest {min(ms):.0f}, slowest {max(ms):.0f}, n={len(ms)})"
    )


def timed(call, repeats: int) -> list[float]:
    times = []
    for index in range(repeats):
        start = time.perf_counter()
        call(index)
        times.append(time.perf_counter() - start)
    return times


def browser(width: int = 1280, height: int = 1000):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", f"--window-size={width},{height}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.set_page_load_timeout(60)
    return driver


WATCH_BUSY = """
const tracker = document.querySelector(arguments[0]);
if (window.textvaeObserver) window.textvaeObserver.disconnect();
window.textvaeBusySeen = false;
window.textvaeObserver = new MutationObserver(() => {
    if (!tracker.classList.contains("hide")) window.textvaeBusySeen = true;
});
window.textvaeObserver.observe(tracker, {attributes: true});
"""


def rows(driver, elem_id: str) -> int:
    from selenium.webdriver.common.by import By

    return len(driver.find_elements(By.CSS_SELECTOR, f"#{elem_id} [role=row].virtual-row"))


def page_times(
    start_text, end_text, url: str, repeats: int, screenshot: str | None, map_screenshot: str | None
) -> dict:
    """Click to table filled, in headless Chromium: {"sample": [...], "interpolate": [...]}."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser()
    wait = WebDriverWait(driver, 120, poll_frequency=0.02)
    times = {"sample": [], "interpolate": []}

    def click_until_new(button: str, table: str, count: int) -> float:
        """Seconds from the click until the table's loading status, seen busy, is hidden again and the
        table shows `count` rows. A MutationObserver sees the busy state however short it is."""
        tracker = f"#{table} [data-testid=status-tracker]"
        driver.execute_script(WATCH_BUSY, tracker)
        start = time.perf_counter()
        driver.find_element(By.ID, button).click()
        wait.until(
            lambda d: (
                d.execute_script("return window.textvaeBusySeen")
                and "hide" in d.find_element(By.CSS_SELECTOR, tracker).get_attribute("class")
                and rows(d, table) == count
            )
        )
        return time.perf_counter() - start

    try:
        driver.get(url)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#sample-seed input"))
        for index in range(repeats):  # a new seed each time: new sentences, a table that changes
            seed = driver.find_element(By.CSS_SELECTOR, "#sample-seed input")
            seed.send_keys(Keys.CONTROL, "a")
            seed.send_keys(str(index + 1))
            times["sample"].append(click_until_new("sample-run", "sample-output", 10))
        driver.find_element(By.ID, "tab-interpolate-button").click()
        driver.find_element(By.CSS_SELECTOR, "#interpolate-start textarea").send_keys(start_text)
        end = driver.find_element(By.CSS_SELECTOR, "#interpolate-end textarea")
        for index in range(repeats):  # another last sentence each time: the similarities change
            end.send_keys(Keys.CONTROL, "a")
            end.send_keys(f"{end_text} {'again ' * index}".strip())
            times["interpolate"].append(click_until_new("interpolate-run", "interpolate-path", 8))
        if screenshot:
            end.send_keys(Keys.CONTROL, "a")
            end.send_keys(end_text)
            click_until_new("interpolate-run", "interpolate-path", 8)
            driver.save_screenshot(screenshot)
        if map_screenshot:
            driver.find_element(By.ID, "tab-latent-button").click()
            time.sleep(2)  # the plot draws itself
            marks = driver.find_elements(By.CSS_SELECTOR, "#map-plot g.mark-symbol path")
            if marks:  # hover a point: its sentence shows in a tooltip
                from selenium.webdriver.common.action_chains import ActionChains

                ActionChains(driver).move_to_element(marks[len(marks) // 3]).perform()
                time.sleep(0.5)
            driver.save_screenshot(map_screenshot)
    finally:
        driver.quit()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--corpus", help="corpus for the latent map and neighbours")
    parser.add_argument("--max-map-points", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--screenshot", help="PNG of the Interpolate tab with a path")
    parser.add_argument("--map-screenshot", help="PNG of the latent map tab")
    parser.add_argument("--start", default=DEFAULT_START, help="first sentence of the interpolations")
    parser.add_argument("--end", default=DEFAULT_END, help="last sentence of the interpolations")
    args = parser.parse_args()

    print(f"torch threads: {torch.get_num_threads()}, load average: {os.getloadavg()}")
    start = time.perf_counter()
    app = build_app(args.run, args.corpus, limits=AppLimits(max_map_points=args.max_map_points))
    print(
        f"build_app (load the model, encode the corpus, draw the curves): {time.perf_counter() - start:.1f} s"
    )
    explorer = app.explorer
    # In a worker thread, as gradio calls the tabs: on a loaded machine torch's intra-op threads made the
    # same calls in the main thread up to 10x slower (OpenMP waiting on oversubscribed cores).
    with ThreadPoolExecutor(max_workers=1) as worker:
        worker.submit(explorer.sample, 10, seed=0).result()  # warm-up: one-off allocations
        sample = worker.submit(timed, lambda i: explorer.sample(10, seed=i), args.repeats).result()
        interpolate = worker.submit(
            timed, lambda i: explorer.interpolate(args.start, args.end, 8), args.repeats
        ).result()
    print("in-process (Explorer in a worker thread, no HTTP, before the server starts):")
    print("  sample n=10      ", summary(sample))
    print("  interpolate 8    ", summary(interpolate))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    try:
        _, url, _ = launch_app(app, "127.0.0.1", port, block=False, quiet=True)
        from gradio_client import Client

        client = Client(url, verbose=False)

        def sample(index):
            client.predict(10, 1.0, 0, 1.0, "standard", index, api_name="/sample")

        def interpolate(index):
            client.predict(args.start, args.end, 8, "lerp", api_name="/interpolate")

        print("through the server (gradio_client: HTTP and gradio's queue):")
        print("  sample n=10      ", summary(timed(sample, args.repeats)))
        print("  interpolate 8    ", summary(timed(interpolate, args.repeats)))
        if shutil.which("chromium") and shutil.which("chromedriver"):
            times = page_times(args.start, args.end, url, args.repeats, args.screenshot, args.map_screenshot)
            print("in the page (headless Chromium: click until the table shows the rows):")
            print("  sample n=10      ", summary(times["sample"]))
            print("  interpolate 8    ", summary(times["interpolate"]))
        else:
            print("no chromium / chromedriver: no page timings (apt-get install -y chromium chromium-driver)")
    finally:
        app.close()


if __name__ == "__main__":
    main()
