"""`ssmp-infer compare`: every trailer generator on one data set, the same budget each, one table.

Rows (`ROWS`): random; the two baselines; SSMP as trained by default (self-paced mask ratio) under
each decoding mode (paper, topk, greedy: the decoding ablation); SSMP trained with each other mask
schedule, decoded the paper's way (the schedule ablation). Every trained row gets the same
`--max-minutes`, preset and seeds. Every row is scored on the test split by `metrics.score_trailer`
and `metrics.summarise`, the functions `ssmp-infer eval` uses, at tolerance 0 and 2, and its
predictions are made exactly as `eval` makes them (same decoding config, seed, batches), so a row's
numbers are those of the `eval` command it records.

Training runs are subprocesses, `python -m ssmp_infer.cli train ...`: each is the command a user would
type (recorded beside its result), it gives its memory back when it ends, and a crash or an interrupt
in one leaves no half-written result behind. The price, importing torch and reading the training split
once per run, is paid before the budget's clock starts (`trainer.Budget` starts after loading), so it
is the same for every method.

DIR holds: runs/RUN/seedS/ (checkpoint + train.log), results/ROW/seedS.json (one row's scores for one
seed), and, rewritten from those at the end of every call, table.md, results.json and plot.png.
Resuming: a row whose seedS.json exists is not evaluated again, and a run whose checkpoint exists is
not trained again; DIR/compare.json refuses a resume with another data root, budget or preset.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import write_atomic, write_text_atomic
from .config import DecodeConfig
from .errors import InputError
from .names import COMPARE_ROWS

TOLERANCES = (0, 2)
EVAL_BATCH = 8  # movies per padded batch: eval's default, so batches match it too
SETTINGS_FILE = "compare.json"
METRICS = ("f1", "ld", "aa")


@dataclass(frozen=True)
class Row:
    name: str
    run: str | None  # the training run it evaluates (runs/RUN/seedS), None for random
    method: str  # eval's --method
    mode: str | None  # SSMP's decoding mode
    what: str


# Training runs: name -> the `ssmp-infer train` options that set it apart.
RUNS = {
    "select-rank": ["--method", "select-rank"],
    "autoregressive": ["--method", "autoregressive"],
    "ssmp-self-paced": ["--mask-schedule", "self-paced"],
    "ssmp-uniform": ["--mask-schedule", "uniform"],
    "ssmp-linear-asc": ["--mask-schedule", "linear-asc"],
    "ssmp-linear-desc": ["--mask-schedule", "linear-desc"],
}

ROWS = (
    Row("random", None, "random", None, "distinct random shots in random order (no training)"),
    Row("select-rank", "select-rank", "select-rank", None, "shot scorer picks the top J, a separate ranker orders them"),
    Row("autoregressive", "autoregressive", "autoregressive", None, "TGT-like: causal decoder, next shot fed back"),
    Row("ssmp", "ssmp-self-paced", "ssmp", "paper", "SSMP, self-paced mask ratio, self-corrective decoding (paper)"),
    Row("ssmp-topk", "ssmp-self-paced", "ssmp", "topk", f"the same model, MaskGIT top-k decoding ({DecodeConfig().steps} rounds)"),
    Row("ssmp-greedy", "ssmp-self-paced", "ssmp", "greedy", "the same model, greedy filling: one slot locks per round"),
    Row("ssmp-uniform", "ssmp-uniform", "ssmp", "paper", "SSMP, mask ratio uniform up to 1 throughout"),
    Row("ssmp-linear-asc", "ssmp-linear-asc", "ssmp", "paper", "SSMP, mask ceiling rising linearly"),
    Row("ssmp-linear-desc", "ssmp-linear-desc", "ssmp", "paper", "SSMP, mask ceiling falling linearly"),
)
ROW_NAMES = tuple(r.name for r in ROWS)
assert ROW_NAMES == COMPARE_ROWS, "names.COMPARE_ROWS lists these rows for the command line: keep them one"


def select_rows(names: str | None) -> list[Row]:
    """`--methods a,b`: those rows in table order; None: every row."""
    if names is None:
        return list(ROWS)
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in ROW_NAMES]
    if unknown or not wanted:
        raise InputError(f"unknown --methods {','.join(unknown) or names!r}; expected some of {','.join(ROW_NAMES)}")
    return [r for r in ROWS if r.name in wanted]


def check_settings(out: Path, settings: dict) -> None:
    """Write DIR/compare.json, or refuse a resume of a run made with other settings."""
    path = out / SETTINGS_FILE
    if path.exists():
        try:
            before = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise InputError(f"{path} is not valid JSON; remove it or pick another --out") from None
        changed = [k for k in settings if before.get(k) != settings[k]]
        if changed:
            was = ", ".join(f"{k} {before.get(k)!r}" for k in changed)
            raise InputError(f"{out} holds a comparison made with {was}; use the same settings or another --out")
        return
    write_text_atomic(path, json.dumps(settings, indent=2) + "\n")


def train_command(run: str, data: str, out_dir: Path, minutes: float, seed: int, preset: str, device: str) -> list[str]:
    return ["train", *RUNS[run], "--data", data, "--out", str(out_dir), "--preset", preset,
            "--max-minutes", f"{minutes:g}", "--seed", str(seed), "--device", device]


def eval_command(row: Row, data: str, model: Path | None, seed: int, tolerance: int) -> str:
    """The `ssmp-infer eval` command whose numbers the row's result equals."""
    args = ["ssmp-infer", "eval", "--data", data, "--method", row.method, "--seed", str(seed), "--tolerance", str(tolerance)]
    if model is not None:
        args += ["--model", str(model)]
    if row.mode is not None:
        args += ["--mode", row.mode]
    return shlex.join(args)


def ensure_trained(run: str, seed: int, out: Path, settings: dict, say) -> Path:
    """The checkpoint of `run` for `seed`, trained now (a subprocess) unless it is already complete."""
    from .checkpoint import CONFIG, WEIGHTS

    model_dir = out / "runs" / run / f"seed{seed}"
    if (model_dir / CONFIG).is_file() and (model_dir / WEIGHTS).is_file():
        return model_dir  # the config is written last: both present means the run finished
    model_dir.mkdir(parents=True, exist_ok=True)
    args = train_command(run, settings["data"], model_dir, settings["minutes"], seed, settings["preset"], settings["device"])
    args.append("--force")  # a run cut off before its config was written leaves only weights behind
    log_path = model_dir / "train.log"
    say(f"training {run}, seed {seed}, {settings['minutes']:g} min (log: {log_path})")
    start = time.monotonic()
    with open(log_path, "w", encoding="utf-8") as log:
        log.write("$ ssmp-infer " + shlex.join(args) + "\n")
        log.flush()
        code = subprocess.call([sys.executable, "-m", "ssmp_infer.cli", *args], stdout=log, stderr=subprocess.STDOUT)
    if code != 0:
        tail = log_path.read_text(encoding="utf-8").strip().splitlines()[-1:]
        raise InputError(f"training {run} seed {seed} failed (exit {code}): {tail[0] if tail else ''} (log: {log_path})")
    say(f"trained {run}, seed {seed} in {time.monotonic() - start:.0f} s")
    return model_dir


def predict(row: Row, model_dir: Path | None, examples, seed: int, device: str) -> list[list[int]]:
    """The trailers `ssmp-infer eval` makes for this row, movie by movie, in the split's order."""
    lengths = [len(e.targets) for e in examples]
    movies = [e.movie for e in examples]
    if row.method == "random":
        rng = np.random.default_rng(seed)  # eval's stream: one permutation per movie, in order
        from .baselines import random_trailer

        return [random_trailer(rng, m.shape[0], n) for m, n in zip(movies, lengths)]
    if row.method == "ssmp":
        from .engine import Engine

        engine = Engine.load(model_dir, device=device)
        decode = DecodeConfig(mode=row.mode, seed=seed)
        shots = []
        for start in range(0, len(movies), EVAL_BATCH):
            chunk = slice(start, start + EVAL_BATCH)
            shots += [t.shots for t in engine.generate_batch(movies[chunk], lengths[chunk], decode)]
        return shots
    from .baselines import generate_trailers, load_baseline
    from .engine import resolve_device

    model = load_baseline(model_dir, row.method, resolve_device(device))
    return generate_trailers(model, movies, lengths, EVAL_BATCH)


def score(preds: list[list[int]], examples) -> dict:
    """{"r0": summary, "r2": summary}: eval's summary at each tolerance."""
    from .metrics import score_trailer, summarise

    truths = [[int(g) for g in e.targets] for e in examples]
    return {f"r{r}": summarise([score_trailer(p, t, r) for p, t in zip(preds, truths)]) for r in TOLERANCES}


def training_facts(model_dir: Path | None) -> dict:
    if model_dir is None:
        return {}
    meta = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    t = meta.get("training", {})
    return {"steps": t.get("steps"), "stopped": t.get("stopped"), "selected_step": t.get("selected_step"),
            "train_minutes": t.get("minutes"), "model_dir": str(model_dir)}


def run_compare(data: str, out: str, minutes: float, seeds: int, methods: str | None = None, preset: str = "demo",
                device: str = "auto", log=sys.stderr) -> dict:
    from .config import PRESETS
    from .data import load_split

    if not minutes > 0:
        raise InputError(f"--minutes must be positive, got {minutes}")
    if not 1 <= seeds <= 100:
        raise InputError(f"--seeds must be from 1 to 100, got {seeds}")
    if preset not in PRESETS:
        raise InputError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
    rows = select_rows(methods)
    require_matplotlib()  # before hours of training, not after
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir} exists and is not a directory")
    examples = load_split(data, "test")  # bad data fails here, before any training (the first run checks train/)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = {"data": str(Path(data).resolve()), "minutes": float(minutes), "preset": preset}
    check_settings(out_dir, settings)
    settings["device"] = device
    jobs = [(row, seed) for seed in range(seeds) for row in rows]  # seed-major: one full table per seed first
    total = len(jobs)

    for k, (row, seed) in enumerate(jobs, 1):
        def say(text: str) -> None:
            print(f"[{k}/{total}] {text}", file=log, flush=True)

        result_path = out_dir / "results" / row.name / f"seed{seed}.json"
        if result_path.exists():
            say(f"{row.name}, seed {seed}: done before, kept")
            continue
        model_dir = None if row.run is None else ensure_trained(row.run, seed, out_dir, settings, say)
        start = time.monotonic()
        scores = score(predict(row, model_dir, examples, seed, device), examples)
        result = {
            "row": row.name,
            "seed": seed,
            **training_facts(model_dir),
            "eval_seconds": round(time.monotonic() - start, 1),
            "eval_command": eval_command(row, settings["data"], model_dir, seed, 0),
            **scores,
        }
        result_path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(result_path, json.dumps(result, indent=2) + "\n", force=True)
        r0, r2 = scores["r0"], scores["r2"]
        say(f"{row.name}, seed {seed}: F1 {r0['f1']:.3f} (R 2: {r2['f1']:.3f})  LD {r0['ld']:.1f}  "
            f"AA {fmt(r0['aa'])}" + ("" if model_dir is None else f"  ({result['steps']} steps)"))

    report = collect(out_dir, rows, seeds, settings)
    write_text_atomic(out_dir / "results.json", json.dumps(report, indent=2) + "\n", force=True)
    write_text_atomic(out_dir / "table.md", format_table(report), force=True)
    write_plot(report, out_dir / "plot.png")
    print(f"wrote {out_dir / 'table.md'}, {out_dir / 'results.json'}, {out_dir / 'plot.png'}", file=log, flush=True)
    return report


def fmt(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def mean_std(values: list) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n − 1) over seeds; None where no seed has a value."""
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return float(np.mean(values)), (float(np.std(values, ddof=1)) if len(values) > 1 else None)


def collect(out_dir: Path, rows: list[Row], seeds: int, settings: dict) -> dict:
    import torch

    table = []
    for row in rows:
        per_seed = [json.loads((out_dir / "results" / row.name / f"seed{s}.json").read_text(encoding="utf-8"))
                    for s in range(seeds)]
        summary = {}
        for r in TOLERANCES:
            for metric in METRICS:
                summary[f"{metric}_r{r}"] = mean_std([p[f"r{r}"][metric] for p in per_seed])
        table.append({
            "name": row.name, "what": row.what, "method": row.method, "mode": row.mode, "run": row.run,
            "steps": [p.get("steps") for p in per_seed],
            "mean": {k: v[0] for k, v in summary.items()},
            "std": {k: v[1] for k, v in summary.items()},
            "seeds": per_seed,
        })
    ceiling = Path(settings["data"]) / "ceiling.json"
    return {
        "settings": {**settings, "seeds": seeds, "tolerances": list(TOLERANCES)},
        "command": "ssmp-infer " + shlex.join(sys.argv[1:]) if Path(sys.argv[0]).name == "ssmp-infer" else None,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "torch": torch.__version__, "torch_threads": torch.get_num_threads()},
        "test_movies": table[0]["seeds"][0]["r0"]["movies"] if table else 0,
        "ceiling": json.loads(ceiling.read_text(encoding="utf-8")) if ceiling.is_file() else None,
        "rows": table,
    }


def format_table(report: dict) -> str:
    s = report["settings"]
    lines = [
        f"Test split of `{s['data']}` ({report['test_movies']} movies); every trained row: `--max-minutes "
        f"{s['minutes']:g}`, preset {s['preset']}, seeds 0-{s['seeds'] - 1}; mean ± sample std over seeds. "
        "F1 at tolerance R (a predicted shot within R positions of a true one counts); LD: Levenshtein "
        "distance of the shot sequences (lower is better); AA: pairwise order agreement of the matched "
        "shots (0.5 is chance).",
        "",
        "| method | steps | F1 (R 0) | F1 (R 2) | LD | AA (R 0) | AA (R 2) | what it is |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        mean, std = row["mean"], row["std"]

        def cell(key: str, digits: int = 3) -> str:
            if mean[key] is None:
                return "-"
            return fmt(mean[key], digits) + ("" if std[key] is None else f" ± {fmt(std[key], digits)}")

        steps = "-" if row["run"] is None else ", ".join(str(x) for x in row["steps"])
        lines.append(f"| {row['name']} | {steps} | {cell('f1_r0')} | {cell('f1_r2')} | {cell('ld_r0', 1)} | "
                     f"{cell('aa_r0')} | {cell('aa_r2')} | {row['what']} |")
    if report.get("ceiling"):
        c = report["ceiling"]
        lines += ["", f"The data generator's own rule without its randomness (`ceiling.json`, R 0): F1 "
                      f"{fmt(c.get('f1'))}, LD {fmt(c.get('ld'), 1)}, AA {fmt(c.get('aa'))}."]
    return "\n".join(lines) + "\n"


def require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise InputError("ssmp-infer compare draws its plot with matplotlib: pip install 'ssmp-infer[compare]'") from None


def write_plot(report: dict, path: Path) -> None:
    """Bars of F1 (R 0 and R 2) and AA (R 0) per method, seed std as error bars."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    rows = report["rows"]
    names = [r["name"] for r in rows]
    x = np.arange(len(rows))

    def series(key):
        return ([np.nan if r["mean"][key] is None else r["mean"][key] for r in rows],
                [0.0 if r["std"][key] is None else r["std"][key] for r in rows])

    fig, (ax_f1, ax_aa) = plt.subplots(1, 2, figsize=(11, 4.2))
    for offset, key, label in ((-0.2, "f1_r0", "F1, R 0"), (0.2, "f1_r2", "F1, R 2")):
        mean, std = series(key)
        ax_f1.bar(x + offset, mean, 0.4, yerr=std, capsize=3, label=label)
    ax_f1.set_title("shot selection: F1")
    ax_f1.legend()
    mean, std = series("aa_r0")
    ax_aa.bar(x, mean, 0.6, yerr=std, capsize=3, color="tab:green")
    ax_aa.axhline(0.5, color="grey", linestyle="--", linewidth=1, label="chance")
    ax_aa.set_title("order: AA (R 0)")
    ax_aa.set_ylim(0, 1)
    ax_aa.legend()
    for ax in (ax_f1, ax_aa):
        ax.set_xticks(x, names, rotation=35, ha="right", fontsize=8)
    s = report["settings"]
    fig.suptitle(f"{report['test_movies']} test movies, {s['minutes']:g} min per trained method, {s['seeds']} seed(s)",
                 fontsize=9)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"), force=True)
    plt.close(fig)
