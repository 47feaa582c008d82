"""`ssmp-infer review DIR`: a page to look at a trailer, pin and ban shots, and regenerate (video extra).

Registered into the main parser by `add_parser(sub)`; bad input is one sentence on stderr, as in the
rest of the CLI. The page and its API: ssmp_infer/review/server.py.
"""

from __future__ import annotations

import signal
import sys
import threading

from .cli_backend import add_backend_args, add_model_arg, engine_options


def add_parser(sub) -> None:
    p = sub.add_parser("review", help="a page to review a trailer: its shots, pins and bans with a click, regenerate")
    p.add_argument("dir", help="the --out directory of `ssmp-infer trailer`; edits.json and the trailer files are rewritten there")
    p.add_argument("--video", default=None, help="the movie file (default: the path trailer.json recorded)")
    add_model_arg(p, "the model trailer.json names")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    add_backend_args(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=8765, help="port (0: any free one; default 8765)")
    p.add_argument("--quiet", action="store_true", help="no step lines on stderr")
    p.set_defaults(func=cmd_review)


def cmd_review(args) -> None:
    from .review.session import ReviewSession
    from .review.server import make_server
    from .review.thumbs import Thumbnails

    def log(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    options = engine_options(args)
    model, device = options.pop("model_dir"), options.pop("device")
    session = ReviewSession(args.dir, video=args.video, model=model, device=device, engine_options=options, log=log)
    key = {"video": session.record.get("video"), "shots": session.shots.bounds}
    thumbs = Thumbnails(session.dir, session.video, session.shots.bounds, session.fps, key)
    server = make_server(session, thumbs, args.host, args.port)
    host, port = server.server_address[:2]
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"ssmp-infer: review page on http://{host}:{port}/ for {session.dir} (Ctrl-C stops)", file=sys.stderr, flush=True)
    while not stop.wait(0.5):
        pass
    server.shutdown()
    server.server_close()
    print("ssmp-infer: stopped", file=sys.stderr, flush=True)
