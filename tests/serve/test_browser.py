"""The web demo in a real browser: ``locllm serve`` in a subprocess, headless Chromium driven by selenium.

Needs Debian's chromium and chromium-driver (``.ci/run`` installs them where it can); skipped where the
browser is absent.
"""

import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import cv2
import pytest

from locllm.cli import main
from locllm.serve.app import render_examples

from ..engine.conftest import tiny_checkpoint

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# The machine's closed network refuses Chromium's background connections; these flags keep it from trying.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1400,1700")
BELLY = ("belly button", "The navel, in the middle of the belly.")
WAIT_S = 60  # a request takes about a second; the rest is slack for a loaded machine


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``locllm serve`` on a free localhost port with a tiny checkpoint: (page URL, checkpoint)."""
    folder = tmp_path_factory.mktemp("serve")
    checkpoint = tiny_checkpoint(folder / "checkpoint")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log_path = folder / "server.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "locllm", "serve", "--checkpoint", str(checkpoint), "--port", str(port),
             "--device", "cpu", "--threads", "1"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                pytest.fail(f"locllm serve exited with {process.returncode}:\n{log_path.read_text()}")
            try:
                urllib.request.urlopen(url, timeout=5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"locllm serve did not answer on {url} within 120 s:\n{log_path.read_text()}")
                time.sleep(0.5)
        yield url, checkpoint
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def browser():
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        pytest.skip(f"no browser: {CHROMIUM} or {CHROMEDRIVER} is missing "
                    "(apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    with tempfile.TemporaryDirectory() as profile:
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        try:
            yield driver
        finally:
            driver.quit()


@pytest.fixture
def scene(tmp_path):
    """The bundled two-person example as a file to upload: (path, boxes text)."""
    image, boxes = render_examples()["SynthPose: 2 persons (easy)"]
    path = tmp_path / "two_persons.png"
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return path, boxes


def wait_for(driver, condition, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S).until(condition, message=f"waited {WAIT_S} s for {what}")


def element(driver, css: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, css)


def open_page(driver, url: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(url)
    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#run"), "the page")


def fill_in(driver, image: Path, boxes: str, extra: tuple[str, str] | None) -> None:
    """Upload the image, type the boxes and, in the table's first row, an extra keypoint."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    # Remove an earlier image first, so that waiting for the picture waits for this upload.
    for remove in driver.find_elements(By.CSS_SELECTOR, '#image button[aria-label="Remove Image"]'):
        remove.click()
        wait_for(driver, lambda d: not d.find_elements(By.CSS_SELECTOR, "#image img"), "the image to go")
    element(driver, "#image input[type=file]").send_keys(str(image))
    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#image img"), "the uploaded image")
    box_field = element(driver, "#boxes textarea")
    box_field.clear()
    box_field.send_keys(boxes)
    for column, text in enumerate(extra or ()):
        # A double click opens the cell's editor; Enter writes the text back into the table.
        ActionChains(driver).double_click(element(driver, f'#extra [data-testid="cell-0-{column}"]')).perform()
        editor = wait_for(driver, lambda d: d.find_element(By.CSS_SELECTOR, "#extra textarea"), "the cell editor")
        editor.send_keys(Keys.CONTROL, "a")
        editor.send_keys(text, Keys.ENTER)
    shown = element(driver, "#extra .virtual-body").text
    assert all(text in shown for text in extra or ()), shown


def run_request(driver) -> dict:
    """Click Localize and read the JSON the page shows."""
    element(driver, "#run").click()
    text = wait_for(driver, lambda d: element(d, "#report textarea").get_attribute("value"), "the JSON")
    return json.loads(text)


def error_messages(driver) -> list[str]:
    from selenium.webdriver.common.by import By

    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, '[data-testid="toast-text"]')]


def predict_json(checkpoint: Path, image: Path, boxes: str, extra: tuple[str, str], tmp_path: Path) -> dict:
    """`locllm predict --json` on the same input; its boxes for several persons come as a detection file."""
    detections = tmp_path / "boxes.json"
    detections.write_text(json.dumps([{"file_name": image.name, "category_id": 1, "score": 1.0,
                                       "bbox": [float(v) for v in line.split(",")]} for line in boxes.splitlines()]))
    out = tmp_path / "predict.json"
    assert main(["predict", str(image), "--checkpoint", str(checkpoint), "--device", "cpu", "--boxes",
                 str(detections), "--describe", "=".join(extra), "--json", str(out)]) == 0
    return json.loads(out.read_text())


def without_timing(report: dict) -> dict:
    return {key: value for key, value in report.items() if key != "ms_per_person"}


def test_page_shows_what_predict_writes(server, browser, scene, tmp_path):
    url, checkpoint = server
    image, boxes = scene
    open_page(browser, url)
    fill_in(browser, image, boxes, BELLY)
    shown = run_request(browser)

    expected = predict_json(checkpoint, image, boxes, BELLY, tmp_path)
    assert shown["images"][0]["image"] == image.name == Path(expected["images"][0]["image"]).name
    expected["images"][0]["image"] = image.name
    assert without_timing(shown) == without_timing(expected)
    assert shown["persons"] == 2 and shown["keypoints"][-1] == "belly button"
    assert "2 persons, 18 keypoints" in element(browser, "#status").text
    assert element(browser, "#picture img").get_attribute("src")

    screenshot = tmp_path / "serve_screenshot.png"
    browser.save_screenshot(str(screenshot))
    print(f"screenshot: {screenshot}")


def test_bad_input_shows_an_error_and_the_next_request_works(server, browser, scene, tmp_path):
    url, _ = server
    image, boxes = scene
    open_page(browser, url)
    fill_in(browser, image, boxes, ("tail tip", ""))
    element(browser, "#run").click()
    wait_for(browser, lambda d: any("unknown keypoint 'tail tip'" in m for m in error_messages(d)),
             "the error message")
    assert not any("Traceback" in m for m in error_messages(browser))
    assert element(browser, "#report textarea").get_attribute("value") == ""

    fake = tmp_path / "holiday.png"  # an image's name, not an image's bytes: only the server can tell
    fake.write_text("not a picture")
    fill_in(browser, fake, boxes, BELLY)
    element(browser, "#run").click()
    wait_for(browser, lambda d: any("'holiday.png' is not an image" in m for m in error_messages(d)),
             "the error message")

    fill_in(browser, image, boxes, BELLY)
    shown = run_request(browser)
    assert shown["persons"] == 2 and shown["keypoints"][-1] == "belly button"


def drag(driver, css: str, start: tuple[int, int], by: tuple[int, int]) -> None:
    """Press at ``start`` (pixels from the element's centre), move by ``by`` in two steps, release."""
    from selenium.webdriver.common.action_chains import ActionChains

    half = (by[0] // 2, by[1] // 2)
    ActionChains(driver).move_to_element_with_offset(element(driver, css), *start).click_and_hold() \
        .move_by_offset(*half).move_by_offset(by[0] - half[0], by[1] - half[1]).release().perform()


def image_pixels_per_screen_pixel(driver) -> tuple[float, float]:
    """(image width / 2, 1 / display scale) of the uploaded image: a drag's offset from the element's centre
    maps to image pixel ``width / 2 + offset / scale`` (the picture is centred and scaled down to fit)."""
    return tuple(driver.execute_script(
        "const i = document.querySelector('#image img'), r = i.getBoundingClientRect();"
        "const s = Math.min(1, r.width / i.naturalWidth, r.height / i.naturalHeight);"
        "return [i.naturalWidth / 2, 1 / s];"))


def test_a_box_dragged_on_the_image_is_typed_shown_and_asked(server, browser, scene):
    from selenium.webdriver.common.by import By

    url, _ = server
    image, _ = scene
    open_page(browser, url)
    fill_in(browser, image, "", None)
    center, per_pixel = image_pixels_per_screen_pixel(browser)
    drag(browser, "#image img", (-100, -100), (50, 80))
    box_field = element(browser, "#boxes textarea")
    drawn = [float(v) for v in wait_for(browser, lambda d: box_field.get_attribute("value"), "the drawn box").split(",")]
    expected = [center - 100 * per_pixel, center - 100 * per_pixel, 50 * per_pixel, 80 * per_pixel]
    assert drawn == pytest.approx(expected, abs=1.01), (drawn, expected)

    box_field.send_keys("\n150,60,60,150")  # typing stays possible, beside a drawn box
    wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#box-overlay rect.person-box")) == 2,
             "both boxes shown on the image")
    shown = run_request(browser)
    assert [p["box"] for p in shown["images"][0]["persons"]] == [drawn, [150.0, 60.0, 60.0, 150.0]]


@pytest.fixture
def detector_server(scene):
    """A server in this process whose localizer has a fake detector that finds the scene's two persons:
    (page URL, the boxes found)."""
    from locllm.engine import Localizer
    from locllm.serve import build_app

    from .test_app import FakeDetector, with_detector

    with tempfile.TemporaryDirectory() as folder:
        found = [[float(v) for v in line.split(",")] for line in scene[1].splitlines()]
        localizer = with_detector(Localizer.from_pretrained(tiny_checkpoint(Path(folder)), device="cpu"),
                                  FakeDetector(found))
        app = build_app(localizer)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, ssr_mode=False, quiet=True)
        try:
            yield app.local_url, found
        finally:
            app.close()


def test_detect_persons_choice(detector_server, browser, scene):
    url, found = detector_server
    open_page(browser, url)
    fill_in(browser, scene[0], "", None)
    element(browser, "#detect input[type=checkbox]").click()
    shown = run_request(browser)
    assert [p["box"] for p in shown["images"][0]["persons"]] == found
    assert "2 persons" in element(browser, "#status").text
