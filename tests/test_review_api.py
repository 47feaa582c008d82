"""The review page's API without a browser: refusals are one sentence and change nothing, only the page's
own files are served (byte ranges for the player), and edits outlive the server (closing the browser or
stopping `review` loses nothing)."""

import json
import threading
import urllib.error
import urllib.request

import pytest

pytest.importorskip("av", reason="the review page needs the video extra")
from .video_clips import make_review_dir  # noqa: E402


@pytest.fixture(scope="module")
def trailer_dir(tmp_path_factory):
    return make_review_dir(tmp_path_factory.mktemp("review_api"), length=5)


class Review:
    """A session and its server on a free loopback port, in this process."""

    def __init__(self, directory):
        from ssmp_infer.review.server import make_server
        from ssmp_infer.review.session import ReviewSession
        from ssmp_infer.review.thumbs import Thumbnails

        self.session = ReviewSession(directory, device="cpu", log=lambda line: None)
        thumbs = Thumbnails(self.session.dir, self.session.video, self.session.shots.bounds, self.session.fps,
                            {"shots": self.session.shots.bounds})
        self.server = make_server(self.session, thumbs, port=0)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def call(self, path: str, body=None, headers=None):
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        request = urllib.request.Request(self.url + path, data=data, headers=headers or {},
                                         method="POST" if data is not None else "GET")
        try:
            with urllib.request.urlopen(request, timeout=60) as r:
                return r.status, r.read(), r.headers
        except urllib.error.HTTPError as e:
            with e:
                return e.code, e.read(), e.headers

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def review(trailer_dir):
    r = Review(trailer_dir)
    yield r
    r.close()


@pytest.mark.parametrize("path, body, words", [
    ("/api/pin", {"slot": 99}, "no slot 99"),
    ("/api/ban", {"shot": -1}, "no shot -1"),
    ("/api/pin", {"slot": "1"}, "must be an integer"),
    ("/api/ban", {}, "names no shot"),
    ("/api/pin", b"{not json", "not JSON"),
    ("/api/options", {"length": 0}, "does not fit"),
    ("/api/candidates", {"count": 9}, "1 to 8"),
])
def test_a_bad_request_is_one_sentence_and_changes_nothing(review, trailer_dir, path, body, words):
    before = review.session.state()
    status, raw, _ = review.call(path, body)
    answer = json.loads(raw)
    assert status == 400 and words in answer["error"] and "\n" not in answer["error"], answer
    assert review.session.state() == before


def test_only_the_pages_own_files_are_served(review):
    assert review.call("/")[0] == 200 and b"review.js" in review.call("/")[1]
    assert review.call("/thumbs/shot_00003.jpg")[1][:2] == b"\xff\xd8"  # a JPEG
    for path in ("/thumbs/../trailer.json", "/thumbs/shot_99999.jpg", "/features.npy", "/shots.json", "/etc/passwd"):
        assert review.call(path)[0] == 404, path
    assert review.call("/api/nothing", {})[0] == 404


def test_a_shots_picture_is_made_when_asked_for_and_shows_that_shot(review, trailer_dir):
    import io

    import numpy as np
    from PIL import Image

    from .video_clips import PALETTE

    picture = trailer_dir / "thumbs" / "shot_00009.jpg"
    picture.unlink(missing_ok=True)
    assert not picture.exists()  # not made at start
    status, raw, headers = review.call("/thumbs/shot_00009.jpg")
    assert status == 200 and headers["Content-Type"] == "image/jpeg" and picture.read_bytes() == raw
    mean = np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"), dtype=float).mean(axis=(0, 1))
    assert np.abs(mean - PALETTE[9 % len(PALETTE)]).max() < 40, mean  # shot 9's colour, no other shot's


def test_the_player_gets_byte_ranges(review, trailer_dir):
    whole = (trailer_dir / "trailer.mp4").read_bytes()
    status, part, headers = review.call("/trailer.mp4", headers={"Range": "bytes=10-99"})
    assert status == 206 and part == whole[10:100] and headers["Content-Range"] == f"bytes 10-99/{len(whole)}"
    status, tail, _ = review.call("/trailer.mp4", headers={"Range": "bytes=-16"})
    assert status == 206 and tail == whole[-16:]
    assert review.call("/trailer.mp4", headers={"Range": f"bytes={len(whole) + 5}-"})[0] == 416
    assert review.call("/trailer.mp4")[1] == whole


def test_edits_outlive_the_server_and_a_regeneration_keeps_them(trailer_dir):
    first = Review(trailer_dir)
    try:
        shots = first.session.state()["trailer_shots"]
        first.call("/api/pin", {"slot": 0})
        first.call("/api/ban", {"shot": shots[3]})
        first.call("/api/options", {"seed": 4})
    finally:
        first.close()
    again = Review(trailer_dir)  # a new `review` of the same directory: the edits are there
    try:
        edits = again.session.state()["edits"]
        assert edits == {"length": 5, "seed": 4, "mode": "paper", "pins": {"0": shots[0]}, "bans": [shots[3]]}
        status, raw, _ = again.call("/api/regenerate", {})
        state = json.loads(raw)
        assert status == 200 and state["trailer_shots"][0] == shots[0] and shots[3] not in state["trailer_shots"]
        assert state["version"] == 1 and state["timing"]["engine_ms"] > 0
        assert json.loads((trailer_dir / "trailer.json").read_text())["edits"] == edits
        # a ban on a pinned shot lifts the pin: the two cannot both hold
        state = json.loads(again.call("/api/ban", {"shot": shots[0]})[1])
        assert state["edits"]["pins"] == {} and shots[0] in state["edits"]["bans"]
    finally:
        again.close()
