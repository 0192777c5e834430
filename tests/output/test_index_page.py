"""``--overlay DIR`` writes ``DIR/index.html``: its data, its safety, and the page itself in headless Chromium."""

import json
import os
import re
import shutil
import time

import cv2
import numpy as np
import pytest

from peakloc.cli import main
from peakloc.output.index_page import Page

from ..conftest import StrictRunner


def _data(page_path):
    text = page_path.read_text(encoding="utf-8")
    found = re.search(r'<script id="peakloc-data" type="application/json">(.*?)</script>', text, re.S)
    return json.loads(found.group(1))


def _inputs(folder, count, bad=()):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        heat = (rng.random((24, 32)) * 50).astype(np.uint8)
        heat[5 + i % 10, 7 + i % 20] = 200 + i % 50
        cv2.imwrite(str(folder / f"frame_{i:03d}.png"), heat)
    for name in bad:
        (folder / name).write_bytes(b"not a png")


def test_page_lists_every_input_with_its_overlay_rows_and_failure(tmp_path):
    _inputs(tmp_path / "in", 3, bad=["broken.png"])
    result = StrictRunner().invoke(main, ["find", str(tmp_path / "in"), "--overlay", str(tmp_path / "ov"), "-q"])
    assert result.exit_code == 1
    data = _data(tmp_path / "ov" / "index.html")
    by_path = {os.path.basename(i["p"]): i for i in data["inputs"]}
    assert sorted(by_path) == ["broken.png", "frame_000.png", "frame_001.png", "frame_002.png"]
    assert by_path["broken.png"]["e"] and by_path["broken.png"]["o"] == []
    good = by_path["frame_001.png"]
    assert good["o"] == ["frame_001.png"] and (tmp_path / "ov" / "frame_001.png").is_file()
    assert [r[2] for r in good["r"]] == ["argmax", "softargmax"]
    assert good["r"][0][3:5] == [8, 6] and good["r"][0][6] == 201
    assert data["methods"] == ["argmax", "softargmax"] and data["snr"] is False


def test_page_is_never_written_through_a_link_and_the_table_is_kept(tmp_path):
    _inputs(tmp_path / "in", 2)
    (tmp_path / "ov").mkdir()
    (tmp_path / "elsewhere.html").write_text("keep")
    os.symlink(tmp_path / "elsewhere.html", tmp_path / "ov" / "index.html")
    result = StrictRunner().invoke(main, ["find", str(tmp_path / "in"), "--overlay", str(tmp_path / "ov"), "-q"])
    assert result.exit_code == 1
    assert "index.html exists and is not a regular file" in result.stderr
    assert len(result.stdout.splitlines()) == 1 + 2 * 2
    assert (tmp_path / "elsewhere.html").read_text() == "keep"


def test_no_path_or_message_can_end_the_pages_script():
    page = Page("x")
    page.add("a</script><script>alert(1)</script>.png", [], [], ["bad </script>"], [])
    html = page.html()
    assert html.count("</script>") == 2  # the data's and the code's own
    assert json.loads(re.search(r'type="application/json">(.*?)</script>', html, re.S).group(1))["inputs"][0][
        "p"
    ].startswith("a</script>")


def test_page_keeps_the_first_rows_of_an_input_and_counts_the_rest():
    page = Page("x")
    rows = [
        {"index": None, "peak": k + 1, "method": "argmax", "x": k, "y": 0, "z": None, "value": 1.0} for k in range(250)
    ]
    page.add("many.png", rows, ["many.png"], [], [])
    entry = page.inputs[0]
    assert len(entry["r"]) == 100 and entry["n"] == 250


# --- the page in a real browser -------------------------------------------------------------------------


def _browser_paths():
    browser = next(
        (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None
    )
    driver = shutil.which("chromedriver")
    return browser, driver


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e '.[test]')")
    binary, driver_path = _browser_paths()
    if binary is None or driver_path is None:
        pytest.skip("no Chromium and ChromeDriver here: apt-get install chromium chromium-driver (.ci/run does)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,900",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _errors(browser):
    return [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def _type(browser, element_id, text):
    box = browser.find_element("id", element_id)
    box.clear()
    box.send_keys(text)


def test_browser_shows_the_run_filters_it_and_opens_an_overlay(browser, tmp_path):
    from selenium.webdriver.support.ui import Select

    _inputs(tmp_path / "in", 25, bad=["broken.png"])
    result = StrictRunner().invoke(
        main,
        [
            "find",
            str(tmp_path / "in"),
            "--overlay",
            str(tmp_path / "ov"),
            "--peaks",
            "3",
            "-m",
            "argmax,gaussian",
            "--extra",
            "-q",
        ],
    )
    assert result.exit_code == 1
    shutil.copytree(tmp_path / "ov", tmp_path / "copied")  # the folder works wherever it is copied
    browser.get((tmp_path / "copied" / "index.html").as_uri())
    assert _errors(browser) == []
    count = lambda: browser.find_element("id", "count").text  # noqa: E731
    assert count() == "26" and browser.find_element("id", "total").text == "26"
    assert len(browser.find_elements("css selector", "tr.input")) == 26
    _type(browser, "filter-path", "frame_01")
    assert count() == "10"
    _type(browser, "filter-path", "")
    Select(browser.find_element("id", "filter-status")).select_by_value("failed")
    assert count() == "1" and "broken.png" in browser.find_element("css selector", "tr.input .path").text
    Select(browser.find_element("id", "filter-status")).select_by_value("")
    Select(browser.find_element("id", "filter-method")).select_by_value("gaussian")
    shown_methods = {td.text for td in browser.find_elements("css selector", "table.rows td:nth-child(3)")}
    assert shown_methods == {"gaussian"}
    _type(browser, "filter-value", "240")
    expected = sum(1 for i in range(25) if 200 + i % 50 >= 240)
    assert count() == str(expected)
    _type(browser, "filter-value", "")
    Select(browser.find_element("id", "filter-method")).select_by_value("argmax")
    Select(browser.find_element("id", "sort")).select_by_value("value")
    first = browser.find_element("css selector", "tr.input .path").text
    assert first.endswith("frame_024.png")  # the highest peak, 224
    thumbnail = browser.find_element("css selector", "tr.input a.thumbnail")
    thumbnail.click()
    assert browser.current_url.endswith("/copied/frame_024.png")
    assert browser.execute_script("return document.images[0].naturalWidth") > 0
    assert _errors(browser) == []


def test_browser_shows_ten_thousand_inputs_within_two_seconds(browser, tmp_path):
    folder = tmp_path / "ov"
    folder.mkdir()
    image = np.zeros((64, 64, 3), np.uint8)
    image[20:40, 20:40] = 255
    cv2.imwrite(str(folder / "f00000.png"), image)
    page = Page(str(folder))
    for i in range(10000):
        name = f"f{i:05d}.png"
        if i:
            os.link(folder / "f00000.png", folder / name)
        rows = [
            {"index": None, "peak": 1, "method": m, "x": i % 64 + 0.25, "y": i % 48, "z": None, "value": float(i % 997)}
            for m in ("argmax", "gaussian")
        ]
        errors = ["cannot decode image"] if i % 1000 == 999 else []
        page.add(f"frames/{name}", [] if errors else rows, [] if errors else [name], errors, [])
    page.write()
    started = time.perf_counter()
    browser.get((folder / "index.html").as_uri())
    loaded = time.perf_counter() - started
    shown_after_ms = browser.execute_script("return window.peaklocShown")
    assert _errors(browser) == []
    assert browser.find_element("id", "count").text == "10000"
    assert len(browser.find_elements("css selector", "tr.input")) == 100  # one page of inputs, not 10000
    print(f"10000 inputs: first rows after {shown_after_ms:.0f} ms, page loaded in {loaded:.2f} s")
    assert shown_after_ms < 2000 and loaded < 2, (shown_after_ms, loaded)
    _type(browser, "filter-path", "f0999")
    assert browser.find_element("id", "count").text == "10"
    visible = browser.find_elements("css selector", "tr.input img")
    assert len(visible) == 9  # f09999 failed: no overlay
