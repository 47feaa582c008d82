"""`ssmp-infer review DIR` in a real browser: headless Chromium (the distribution's package) driven by
Playwright. A trailer directory made by `ssmp-infer trailer` from a clip made here; a slot pinned and a
shot banned by clicking, the trailer regenerated; the page, edits.json, the timeline and the EDL all say
the trailer `ssmp-infer run` gives with the same pins and bans.

Needs `chromium` on the PATH (Debian: `apt-get install chromium`; `.ci/run` installs it) and the
playwright package (the test extra). Without them the test is skipped, unless SSMP_REQUIRE_BROWSER is
set (CI sets it), where a missing browser is a failure.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

pytest.importorskip("av", reason="the review page needs the video extra")
from .video_clips import REVIEW_SHOT_LENGTHS as SHOT_LENGTHS  # noqa: E402
from .video_clips import make_review_dir  # noqa: E402
from .video_clips import ssmp_cli as cli  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
REQUIRED = bool(os.environ.get("SSMP_REQUIRE_BROWSER"))
try:
    from playwright.sync_api import sync_playwright
except ImportError:
    sync_playwright = None
if sync_playwright is None or CHROMIUM is None:
    if REQUIRED:
        raise RuntimeError(f"SSMP_REQUIRE_BROWSER is set but playwright ({sync_playwright is not None}) or chromium "
                           f"({CHROMIUM}) is missing")
    pytest.skip("the browser test needs playwright and Debian's chromium", allow_module_level=True)

# The flags a root process in a closed network needs (no sandbox as root; no background connections).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def trailer_dir(tmp_path_factory):
    return make_review_dir(tmp_path_factory.mktemp("review"), length=4)


class ReviewProcess:
    """`ssmp-infer review DIR --port 0` as a user starts it; the page's address read from its stderr."""

    def __init__(self, directory: Path):
        self.process = subprocess.Popen([sys.executable, "-m", "ssmp_infer.entry", "review", str(directory), "--port", "0"],
                                        stderr=subprocess.PIPE, text=True)
        self.log, found = [], threading.Event()

        def read() -> None:
            for line in self.process.stderr:
                self.log.append(line)
                if "review page on" in line:
                    found.set()

        threading.Thread(target=read, daemon=True).start()
        if not found.wait(300):
            self.process.kill()
            raise RuntimeError("review did not start:\n" + "".join(self.log))
        self.url = re.search(r"http://\S+/", "".join(self.log)).group(0)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(60)


def run_shots(flags: list[str]) -> list[int]:
    r = cli("run", *flags, "--device", "cpu")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["shots"]


def otio_shots(directory: Path) -> list[int]:
    timeline = json.loads((directory / "trailer.otio").read_text())
    video = next(t for t in timeline["tracks"]["children"] if t["kind"] == "Video")
    return [clip["metadata"]["ssmp_infer"]["shot"] for clip in video["children"]]


def edl_shots(directory: Path) -> list[int]:
    return [int(m) for m in re.findall(r"FROM CLIP NAME:\s*shot (\d+)", (directory / "trailer.edl").read_text())]


def test_pin_ban_and_regenerate_by_clicking_agree_with_run(trailer_dir, tmp_path):
    first = json.loads((trailer_dir / "trailer.json").read_text())["shots"]
    review = ReviewProcess(trailer_dir)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(review.url)
            page.wait_for_selector("#trailer .slot")
            shown = [int(s) for s in page.locator("#trailer .slot").evaluate_all("els => els.map(e => e.dataset.shot)")]
            assert shown == first  # the page shows the trailer the directory holds, in slot order
            assert page.locator("#shots .shot").count() == len(SHOT_LENGTHS)  # every movie shot, in film order
            badges = page.locator("#shots .shot.taken").evaluate_all(
                "els => els.map(e => [Number(e.dataset.shot), Number(e.querySelector('.badge').textContent)])")
            assert sorted(badges) == sorted([shot, slot + 1] for slot, shot in enumerate(first))

            # click: pin slot 1 to its shot, ban the shot in slot 2
            pinned, banned = first[1], first[2]
            page.click('#trailer .slot[data-slot="1"]')
            page.wait_for_selector('#trailer .slot.pinned[data-slot="1"]')
            page.click(f'#shots .shot[data-shot="{banned}"]')
            page.wait_for_selector(f'#shots .shot.banned[data-shot="{banned}"]')
            edits = json.loads((trailer_dir / "edits.json").read_text())  # saved at each click
            assert edits["pins"] == {"1": pinned} and edits["bans"] == [banned]

            page.click("#regenerate")
            page.wait_for_function("document.getElementById('status').textContent.startsWith('Regenerated')")
            shown = [int(s) for s in page.locator("#trailer .slot").evaluate_all("els => els.map(e => e.dataset.shot)")]
            flags = page.locator("#run-flags").inner_text().split()[2:]  # "ssmp-infer run FLAGS..."
            page.wait_for_function("document.getElementById('player').readyState >= 1")
            duration = page.evaluate("document.getElementById('player').duration")

            page.click("#candidates")
            page.wait_for_selector("#candidate-list .candidate")
            candidates = page.locator("#candidate-list .candidate").evaluate_all(
                "els => els.map(e => Array.from(e.querySelectorAll('li')).map(li => Number(li.textContent)))")
            page.screenshot(path=str(tmp_path / "review.png"), full_page=True)
            browser.close()
        assert not errors, errors
    finally:
        assert review.stop() == 0, "".join(review.log)
    assert "stopped" in "".join(review.log)

    expected = run_shots(flags)
    assert flags[0] == str(trailer_dir / "features.npy") and ["--pin", f"1:{pinned}"] == flags[flags.index("--pin"):][:2]
    assert shown == expected and shown[1] == pinned and banned not in shown
    assert shown != first  # the ban changed the trailer
    assert otio_shots(trailer_dir) == expected and edl_shots(trailer_dir) == expected
    record = json.loads((trailer_dir / "trailer.json").read_text())
    assert record["shots"] == expected and [s["shot"] for s in record["slots"]] == expected
    assert record["edits"] == {**edits, "length": 4}
    assert abs(duration - record["duration"]) < 0.1  # the player plays the regenerated render
    assert len(candidates) == 3 and all(c[1] == pinned and banned not in c for c in candidates)
    assert expected in candidates  # the first seed's candidate is the trailer itself


def test_review_of_a_directory_that_is_not_a_trailer_is_one_sentence(tmp_path):
    r = cli("review", tmp_path)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "trailer.json" in r.stderr and len(r.stderr.strip().splitlines()) == 1
