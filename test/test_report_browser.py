"""The evaluation report opens in a real browser: the page loads, every picture loads and
the video plays (its ``currentTime`` advances).

Browser: Debian's ``chromium`` (``apt-get install chromium``; ``.ci/run`` installs it),
driven by Python ``playwright`` with ``executable_path`` - never ``playwright install``,
nothing is downloaded. Where either is missing the test skips and says which. The report
is served by a local HTTP server on 127.0.0.1 (as a user would open it from a web server;
``file://`` works too).
"""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from pathlib import Path

import pytest
from test_eval_bag import _write_bag

from derain_ros.eval.evaluate import evaluate_bag

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def _chromium() -> Path:
    if not CHROMIUM.is_file():
        found = shutil.which("chromium")
        if found is None:
            pytest.skip("Debian's chromium is not installed (`apt-get install -y chromium`; "
                        ".ci/run installs it): the report is not checked in a browser")
        return Path(found)
    return CHROMIUM


@pytest.fixture
def served_report(tmp_path):
    bag = tmp_path / "replayed"
    _write_bag(bag)
    evaluate_bag(bag, report_dir=tmp_path / "report", progress=False)
    handler = functools.partial(_QuietHandler, directory=str(tmp_path / "report"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/report.html"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def test_report_video_is_h264_in_mp4(served_report, tmp_path):
    """What browsers play (MPEG-4 Part 2, OpenCV's default, plays in none): the MP4's
    sample entry is ``avc1`` (H.264), not ``mp4v``. Runs without a browser too."""
    videos = list((tmp_path / "report").glob("*.mp4"))
    assert len(videos) == 1, videos
    data = videos[0].read_bytes()
    assert data[4:8] == b"ftyp" and b"avc1" in data and b"mp4v" not in data


@pytest.mark.slow
def test_report_plays_in_a_real_browser(served_report, tmp_path):
    exe = _chromium()
    sync_api = pytest.importorskip(
        "playwright.sync_api",
        reason="Python playwright is not installed (requirements/python.txt)")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(exe), headless=True,
            args=ARGS)
        try:
            page = browser.new_page()
            failed: list[str] = []
            page.on("requestfailed", lambda r: failed.append(r.url))
            response = page.goto(served_report, wait_until="load", timeout=60_000)
            assert response is not None and response.ok
            images = page.eval_on_selector_all(
                "img", "els => els.map(e => [e.getAttribute('src'), e.complete, e.naturalWidth])")
            assert len(images) >= 3, images  # sample frames and plots
            assert all(done and width > 0 for _, done, width in images), images
            assert page.locator("video").count() == 1
            page.wait_for_function(
                "() => document.querySelector('video').readyState >= 2", timeout=30_000)
            codec_ok = page.evaluate("() => !document.querySelector('video').error")
            assert codec_ok
            page.evaluate("() => document.querySelector('video').play()")
            page.wait_for_function(
                "() => document.querySelector('video').currentTime > 0.1", timeout=30_000)
            assert page.evaluate("() => document.querySelector('video').videoWidth") > 0
            assert not failed, failed
        finally:
            browser.close()
