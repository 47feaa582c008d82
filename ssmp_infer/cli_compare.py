"""`ssmp-infer compare`: its arguments and handler (the work is in `ssmp_infer.compare`)."""

from __future__ import annotations

import json

from .config import PRESETS
from .names import COMPARE_ROWS


def add_parser(sub) -> None:
    p = sub.add_parser("compare", help="train every method (baselines, SSMP's mask schedules and decoding modes) "
                                       "with the same budget and compare them on the test split")
    p.add_argument("--data", required=True, help="data root in the CMTD layout (trains on train/, scores test/)")
    p.add_argument("--minutes", type=float, required=True, help="training budget of every trained method (--max-minutes)")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per method (default 3); mean ± std over them")
    p.add_argument("--out", required=True,
                   help="directory for checkpoints, per-seed results, table.md, results.json and plot.png; "
                        "run again to resume (finished methods and seeds are kept)")
    p.add_argument("--methods", default=None,
                   help=f"a subset, comma-separated, of {', '.join(COMPARE_ROWS)} (default: all)")
    p.add_argument("--preset", choices=tuple(PRESETS), default="demo", help="model size of every trained method")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]: training and generation run there")
    p.set_defaults(func=cmd_compare)


def cmd_compare(args) -> None:
    from .compare import format_table, run_compare

    report = run_compare(args.data, args.out, args.minutes, args.seeds, methods=args.methods, preset=args.preset,
                         device=args.device)
    print(format_table(report))
    print(json.dumps({"out": args.out, "rows": {r["name"]: r["mean"] for r in report["rows"]}}))
