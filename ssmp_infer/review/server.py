"""`ssmp-infer review DIR`: the review page and its small JSON API, on the loopback by default.

    GET  /                      the page (static/index.html, review.css, review.js: no build step, nothing
                                fetched from outside)
    GET  /api/state             the movie's shots, the trailer's slots, the edits, what `run` would be given
    POST /api/pin   {"slot"}    pin a slot to the shot it shows, or un-pin it
    POST /api/ban   {"shot"}    ban a shot, or lift its ban
    POST /api/options {"length", "seed"}
    POST /api/regenerate        the trailer with the edits; its files in DIR rewritten
    POST /api/candidates {"count"}  K alternatives with the edits, side by side
    GET  /thumbs/shot_NNNNN.jpg, /trailer.mp4 (byte ranges, for the player), /trailer.png

The standard library's threading HTTP server: one editor, a few requests a second. Only the files named
above are served; anything else is a 404.
"""

from __future__ import annotations

import json
import re
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path

from ..errors import InputError

STATIC = {"/": ("index.html", "text/html; charset=utf-8"), "/review.css": ("review.css", "text/css; charset=utf-8"),
          "/review.js": ("review.js", "text/javascript; charset=utf-8")}
FILES = {"/trailer.mp4": ("trailer.mp4", "video/mp4"), "/trailer.png": ("trailer.png", "image/png")}
THUMB = re.compile(r"^/thumbs/shot_(\d{5})\.jpg$")
MAX_BODY = 4096  # the API's requests are a few numbers


def static_text(name: str) -> bytes:
    return resources.files("ssmp_infer.review").joinpath("static", name).read_bytes()


def make_handler(session, thumbs):
    class Handler(BaseHTTPRequestHandler):
        server_version = "ssmp-infer-review"

        def log_message(self, *args) -> None:  # quiet: the session logs what matters
            pass

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path in STATIC:
                name, kind = STATIC[path]
                return self.send(HTTPStatus.OK, static_text(name), kind)
            if path == "/api/state":
                return self.send_json(session.state())
            if path in FILES:
                name, kind = FILES[path]
                return self.send_file(session.dir / name, kind)
            match = THUMB.match(path)
            picture = thumbs.path(int(match.group(1))) if match else None
            if picture is not None:
                return self.send_file(picture, "image/jpeg")
            self.send_json({"error": f"no such page {path[:80]}"}, HTTPStatus.NOT_FOUND)

        def do_POST(self) -> None:
            path = self.path.split("?", 1)[0]
            actions = {
                "/api/pin": lambda body: session.toggle_pin(integer(body, "slot")),
                "/api/ban": lambda body: session.toggle_ban(integer(body, "shot")),
                "/api/options": lambda body: session.set_options(integer(body, "length", None), integer(body, "seed", None)),
                "/api/regenerate": lambda body: session.regenerate(),
                "/api/candidates": lambda body: {"candidates": session.candidates(integer(body, "count"))},
            }
            if path not in actions:
                return self.send_json({"error": f"no such action {path[:80]}"}, HTTPStatus.NOT_FOUND)
            try:
                self.send_json(actions[path](self.read_json()))
            except InputError as e:
                self.send_json({"error": str(e)}, HTTPStatus.BAD_REQUEST)

        def read_json(self) -> dict:
            size = int(self.headers.get("Content-Length") or 0)
            if size > MAX_BODY:
                raise InputError(f"a request of {size} bytes; the review API takes at most {MAX_BODY}")
            raw = self.rfile.read(size) if size else b"{}"
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                raise InputError("the request body is not JSON") from None
            if not isinstance(body, dict):
                raise InputError("the request body is not a JSON object")
            return body

        def send_json(self, value, status: HTTPStatus = HTTPStatus.OK) -> None:
            self.send(status, (json.dumps(value) + "\n").encode(), "application/json")

        def send(self, status: HTTPStatus, body: bytes, kind: str, headers: dict | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")  # a regenerated trailer keeps its file names
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def send_file(self, path: Path, kind: str) -> None:
            """The file, or the one byte range asked for (a video player seeks with Range requests)."""
            try:
                data = path.read_bytes()
            except OSError:
                return self.send_json({"error": f"{path.name} is not there"}, HTTPStatus.NOT_FOUND)
            match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
            if not match or not data or match.group(1) == match.group(2) == "":
                return self.send(HTTPStatus.OK, data, kind, {"Accept-Ranges": "bytes"})
            first, last = match.groups()
            start = int(first) if first else max(len(data) - int(last), 0)
            end = min(int(last), len(data) - 1) if first and last else len(data) - 1
            if start > end:
                return self.send(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, b"", kind, {"Content-Range": f"bytes */{len(data)}"})
            self.send(HTTPStatus.PARTIAL_CONTENT, data[start:end + 1], kind,
                      {"Accept-Ranges": "bytes", "Content-Range": f"bytes {start}-{end}/{len(data)}"})

    return Handler


def integer(body: dict, name: str, default=...):
    value = body.get(name, default)
    if value is ...:
        raise InputError(f"the request names no {name}")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{name} must be an integer, got {str(value)[:40]!r}")
    return value


def make_server(session, thumbs, host: str = "127.0.0.1", port: int = 8765) -> ThreadingHTTPServer:
    """`thumbs`: the movie's shot pictures (`review.thumbs.Thumbnails`), made as the page asks for them."""
    try:
        server = ThreadingHTTPServer((host, port), make_handler(session, thumbs))
    except OSError as e:
        raise InputError(f"cannot listen on {host}:{port} ({e.strerror or e}); pass another --port") from None
    server.daemon_threads = True
    return server
