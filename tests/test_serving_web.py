"""The web page in a real browser: the system's headless Chromium (Debian's ``chromium`` + ``chromium-driver``,
installed by ``.ci/run``), driven by Selenium, against a real ``bentoml serve`` on 127.0.0.1.

Screenshots and downloads of a run are kept in ``<system temp>/facelandmarks-artefacts/web`` (or
``$FACELANDMARKS_TEST_ARTEFACTS/web``; printed with ``-s``). Set
``FACELANDMARKS_WEB_FIGURE=reports/figures/web_page.png`` to also write the README's screenshot (a demo photo),
and ``FACELANDMARKS_WEB_MODEL=<checkpoint or models:/ URI>`` to serve that model instead of the tests' tiny one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from conftest import RAW, ROOT
from test_serving_http import bentoml_serve

pytestmark = pytest.mark.needs_data  # reads data/raw (dvc pull); `make unit` deselects it

DEMO = RAW / "demo" / "images"
VIDEO = RAW / "demo" / "video"
PHOTO = DEMO / "face_recognition__two_people.jpg"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"]
WAIT_S = 180  # an upload is answered in seconds; this only bounds a broken run


@pytest.fixture(scope="module")
def served(request, tmp_path_factory):
    """``bentoml serve`` of the tiny model (or ``FACELANDMARKS_WEB_MODEL``) with the HTTP tests' settings."""
    model = os.environ.get("FACELANDMARKS_WEB_MODEL") or request.getfixturevalue("tiny_checkpoint")
    with bentoml_serve(model, tmp_path_factory.mktemp("serve-web")) as server:
        yield server


@pytest.fixture(scope="module")
def artefacts() -> Path:
    """Where screenshots and downloads of this run go: ``FACELANDMARKS_TEST_ARTEFACTS/web``, else
    ``<system temp>/facelandmarks-artefacts/web`` (emptied first; kept after the run for a person or CI to look at)."""
    base = Path(os.environ.get("FACELANDMARKS_TEST_ARTEFACTS") or Path(tempfile.gettempdir()) / "facelandmarks-artefacts")
    folder = base / "web"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    print(f"\nweb page test artefacts: {folder}")
    return folder


@pytest.fixture(scope="module")
def browser(artefacts):
    """Headless Chromium with an empty profile, downloading into ``artefacts / "downloads"``."""
    if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
        raise pytest.UsageError("chromium and chromedriver are missing: apt-get install -y chromium chromium-driver "
                                "(.ci/run does this)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    downloads = artefacts / "downloads"
    downloads.mkdir()
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1280,1000"]:
        opts.add_argument(flag)
    opts.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                           "download.prompt_for_download": False})
    driver = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.downloads = downloads
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _wait(driver, condition, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S, poll_frequency=0.2).until(condition, message=f"waiting for {what}")


def _upload(driver, path: Path) -> str:
    """Choose ``path`` in the page's file input; wait until the page is done or shows an error; return the state."""
    from selenium.webdriver.common.by import By

    driver.execute_script("document.body.dataset.state = 'idle'")
    driver.find_element(By.ID, "file").send_keys(str(path))
    return _wait(driver, lambda d: (s := d.find_element(By.TAG_NAME, "body").get_attribute("data-state")) in
                 ("done", "error") and s, f"the page's answer to {path.name}")


def _text(driver, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id).text


def _download(driver, css: str, name: str) -> Path:
    """Click a download link and wait for the file."""
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, css).click()
    path = driver.downloads / name
    _wait(driver, lambda d: path.is_file() and path.stat().st_size > 0, f"the download {name}")
    return path


def _open(driver, url: str) -> dict:
    """Open the page; wait until it shows the model; return ``/info``."""
    driver.get(url + "/")
    info = requests.post(f"{url}/info", json={}, timeout=30).json()
    _wait(driver, lambda d: info["checkpoint_sha256"][:12] in _text(d, "model"), "the model line")
    return info


@pytest.mark.slow
def test_page_shows_model_limits_and_landmarks(served, browser, artefacts):
    """A demo photo uploaded on the page: as many faces as ``/faces`` finds, drawn; the JSON and the ``.pts``
    downloads hold the service's landmarks (``.pts`` 1-based, as 300-W)."""
    from selenium.webdriver.common.by import By

    from facelandmarks.io.pts import read_pts

    t0 = time.perf_counter()
    info = _open(browser, served.url)
    model = _text(browser, "model")
    assert info["backbone"] in model and info["device"] in model and "not from the registry" in model
    limits = _text(browser, "limits")
    assert "2 MiB per upload" in limits and "3.0 megapixels" in limits and "first 4 frames" in limits

    want = requests.post(f"{served.url}/faces", files={"image": (PHOTO.name, PHOTO.read_bytes())}, timeout=120).json()
    assert _upload(browser, PHOTO) == "done", _text(browser, "error")
    count = browser.find_element(By.ID, "face-count")
    assert int(count.get_attribute("data-count")) == len(want) == 2 and count.text == "2 faces"
    assert len(browser.find_elements(By.CSS_SELECTOR, "#faces li")) == len(want)
    size = browser.execute_script("const c = document.getElementById('canvas'); return [c.width, c.height]")
    assert size == [1126, 661]  # the photo at full resolution
    before = browser.execute_script("return document.getElementById('canvas').toDataURL()")
    browser.find_element(By.ID, "show-numbers").click()
    after = browser.execute_script("return document.getElementById('canvas').toDataURL()")
    assert after != before  # the point numbers were drawn
    browser.save_screenshot(str(artefacts / "web_page.png"))
    figure = os.environ.get("FACELANDMARKS_WEB_FIGURE")
    if figure:  # the README's screenshot: a demo photo only, the whole page
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(1100, height + 140)
        browser.save_screenshot(str(ROOT / figure))
        browser.set_window_size(1280, 1000)

    doc = json.loads(_download(browser, "a.download-json", f"{PHOTO.stem}.json").read_text())
    assert doc["file"] == PHOTO.name and (doc["width"], doc["height"]) == (1126, 661)
    assert doc["faces"] == want and doc["model"]["checkpoint_sha256"] == info["checkpoint_sha256"]
    pts_links = browser.find_elements(By.CSS_SELECTOR, "a.download-pts")
    assert [a.get_attribute("download") for a in pts_links] == [f"{PHOTO.stem}_{i + 1}.pts" for i in range(len(want))]
    for i, face in enumerate(want):
        pts = _download(browser, f"a.download-pts:nth-of-type({i + 2})", f"{PHOTO.stem}_{i + 1}.pts")
        assert pts.read_text().splitlines()[:3] == ["version: 1", "n_points:  68", "{"]
        np.testing.assert_allclose(read_pts(pts), np.array(face["landmarks"]), atol=1e-5)  # 1-based on disk
        first = [float(v) for v in pts.read_text().splitlines()[3].split()]
        np.testing.assert_allclose(first, np.array(face["landmarks"][0]) + 1, atol=1e-5)
    print(f"photo upload, drawing and downloads in the browser: {time.perf_counter() - t0:.1f} s")


@pytest.mark.slow
def test_page_shows_api_errors_as_messages(served, browser, artefacts, tmp_path):
    """Refusals of the API (400 not an image, 413 too many pixels) and an upload over the size limit appear as
    readable messages; the next good photo clears them."""
    _open(browser, served.url)
    notes = tmp_path / "notes.txt"
    notes.write_text("These are notes, not a photo.\n")
    assert _upload(browser, notes) == "error"
    message = _text(browser, "error")
    assert message.startswith('"notes.txt" was refused (HTTP 400 Bad Request): ') and "not a readable image" in message
    assert browser.find_element("id", "result").is_displayed() is False
    browser.save_screenshot(str(artefacts / "web_page_error.png"))

    big = DEMO / "facenet_pytorch__angelina_jolie.jpg"  # 1665 x 2048 pixels: over the 3 megapixel limit
    assert _upload(browser, big) == "error"
    message = _text(browser, "error")
    assert "is over the service's limits (HTTP 413" in message and "exceeds the limit of 3000000 pixels" in message

    huge = tmp_path / "huge.jpg"  # over the 2 MiB upload limit: refused before it is sent
    huge.write_bytes(PHOTO.read_bytes() * 5)
    assert _upload(browser, huge) == "error"
    assert "exceeds the upload limit of 2 MiB" in _text(browser, "error")

    obama = DEMO / "face_recognition__obama.jpg"
    want = requests.post(f"{served.url}/faces", files={"image": (obama.name, obama.read_bytes())}, timeout=120).json()
    assert _upload(browser, obama) == "done"
    assert not browser.find_element("id", "error").is_displayed()
    assert int(browser.find_element("id", "face-count").get_attribute("data-count")) == len(want) > 0


@pytest.mark.slow
def test_page_annotates_a_video(served, browser, artefacts):
    """A short video goes to ``/annotate_gif``; the page shows the annotated GIF and offers it for download."""
    from selenium.webdriver.common.by import By

    _open(browser, served.url)
    assert _upload(browser, VIDEO / "face_recognition__short_hamilton_clip.mp4") == "done", _text(browser, "error")
    img = browser.find_element(By.ID, "annotated")
    assert img.is_displayed()
    w, h = browser.execute_script("const i = document.getElementById('annotated'); return [i.naturalWidth, i.naturalHeight]")
    assert max(w, h) == 240  # serve.limits.max_side of the test server
    gif = _download(browser, "a.download-gif", "face_recognition__short_hamilton_clip_landmarks.gif")
    assert gif.read_bytes()[:6] in (b"GIF87a", b"GIF89a")


@pytest.mark.slow
def test_page_fits_a_phone(served, browser, artefacts):
    """At a phone's size (390 x 844 CSS pixels) the page needs no sideways scrolling and shows the result."""
    _open(browser, served.url)
    browser.set_window_size(390, 844)
    try:
        assert _upload(browser, DEMO / "face_recognition__obama.jpg") == "done"
        scroll, inner = browser.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
        assert scroll <= inner, f"page is {scroll} px wide in a {inner} px window"
        canvas_w = browser.execute_script("return document.getElementById('canvas').getBoundingClientRect().width")
        assert 0 < canvas_w <= inner
        browser.save_screenshot(str(artefacts / "web_page_phone.png"))
    finally:
        browser.set_window_size(1280, 1000)
