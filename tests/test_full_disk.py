"""A full disk loses nothing: every command that writes, run on a nearly full file system, ends with one
sentence, leaves the user's files on that disk as they were, and leaves no partial file a reader would
take for a whole one (no temporary file, no half of a pair, no cut-off record).

The file system is a real tmpfs of a few MB, mounted in a user and mount namespace of the test's own
(`unshare -rm`), so nothing outside the test sees it; the commands are the real CLI in a subprocess.
Where the kernel does not allow such a namespace, the tests skip.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ssmp_infer.checkpoint import save_checkpoint
from ssmp_infer.config import ModelConfig
from ssmp_infer.model import SSMPEncoder

DRIVER = Path(__file__).with_name("full_disk_driver.py")
D = 16
TINY = ModelConfig(feature_dim=D, d_model=16, n_layers=1, n_heads=2, d_ff=32, dropout=0.0, shot_prior=True,
                   context_prior=True, local_context=True, position_keys=True)


def namespaces_work() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt || "
                            "mount -t tmpfs -o size=64k tmpfs /tmp"], capture_output=True)
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(not namespaces_work(), reason="no user and mount namespaces here (unshare -rm)")


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("disk_fixtures")
    torch.manual_seed(0)
    save_checkpoint(SSMPEncoder(TINY).eval(), root / "model", {"note": "full disk"})
    rng = np.random.default_rng(0)
    for k in range(3):
        np.save(root / f"movie_{k}.npy", rng.standard_normal((60, D)).astype(np.float32))
    for split in ("train", "test"):
        for sub in ("movie_shot_embs", "trailer_shot_embs"):
            (root / "data" / split / sub).mkdir(parents=True)
        for k in range(4):
            m = rng.standard_normal((40, D)).astype(np.float32)
            np.save(root / "data" / split / "movie_shot_embs" / f"m{k}.npy", m)
            np.save(root / "data" / split / "trailer_shot_embs" / f"m{k}.npy", m[[2, 9, 17]])
    return root


def on_full_disk(tmp_path, argv, spare_kb=0, size_kb=4096, before=None) -> dict:
    disk = tmp_path / "disk"
    disk.mkdir()
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"disk": str(disk), "size_kb": size_kb, "spare_kb": spare_kb, "before": before or {},
                                "argv": [str(a) for a in argv]}))
    proc = subprocess.run(["unshare", "-rm", sys.executable, str(DRIVER), str(spec)], capture_output=True, text=True,
                          timeout=900, cwd=Path(__file__).parent.parent)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def assert_nothing_lost(found: dict, *new_whole: str, log: bool = False) -> None:
    """One sentence naming the full disk (after the command's progress log, with `log`), a failed exit;
    the files that were there unchanged; nothing new but `new_whole` (files the command finished whole
    before the disk filled), and no temporary file."""
    assert found["rc"] in (1, 2), found["stderr"]
    lines = found["stderr"].strip().splitlines()
    assert "Traceback" not in found["stderr"] and (log or len(lines) == 1), lines
    assert lines[-1].startswith("ssmp-infer: error:") and "the disk is full" in lines[-1], lines[-1]
    assert not any(line.startswith("ssmp-infer: error:") for line in lines[:-1]), lines
    for rel, digest in found["before"].items():
        assert found["after"].get(rel) == digest, f"{rel} changed"
    new = set(found["after"]) - set(found["before"])
    assert not [n for n in new if n.endswith(".tmp") or "/." in n or n.startswith(".")], new
    assert new <= set(new_whole), new


def test_run_keeps_the_file_it_was_told_to_replace(fixtures, tmp_path):
    found = on_full_disk(tmp_path, ["run", fixtures / "movie_0.npy", "--model", fixtures / "model", "--out",
                                    "{disk}/trailer.json", "--force"], before={"trailer.json": "the old trailer"})
    assert_nothing_lost(found)


def test_run_of_many_movies_writes_no_half_file(fixtures, tmp_path):
    found = on_full_disk(tmp_path, ["run", fixtures / "movie_0.npy", fixtures / "movie_1.npy", "--model",
                                    fixtures / "model", "--out", "{disk}/trailers.jsonl"])
    assert_nothing_lost(found)


def test_a_resumed_run_keeps_its_whole_records(fixtures, tmp_path):
    inputs = [fixtures / f"movie_{k % 3}.npy" for k in range(30)]  # more records than the file's last page holds
    first = subprocess.run([sys.executable, "-m", "ssmp_infer.cli", "run", inputs[0], "--model", fixtures / "model"],
                           capture_output=True, text=True)
    record = json.dumps({"name": "movie_0", **json.loads(first.stdout)})
    found = on_full_disk(tmp_path, ["run", *inputs, "--model", fixtures / "model", "--out", "{disk}/t.jsonl", "--resume"],
                         spare_kb=0, before={"t.jsonl": record + "\n"})
    assert found["rc"] == 1 and "the disk is full" in found["stderr"].strip().splitlines()[-1], found["stderr"]
    assert found["texts"]["t.jsonl"].startswith(record + "\n")
    for line in found["texts"]["t.jsonl"].splitlines():  # whole records only: a torn line would be dropped on resume
        json.loads(line)


def test_train_saves_both_files_or_neither(fixtures, tmp_path):
    found = on_full_disk(tmp_path, ["train", "--data", fixtures / "data", "--out", "{disk}/ck", "--epochs", "1",
                                    "--validation-fraction", "0"], spare_kb=256, size_kb=8192)
    assert_nothing_lost(found, log=True)


def test_export_writes_no_half_graph(fixtures, tmp_path):
    found = on_full_disk(tmp_path, ["export", "--model", fixtures / "model", "--out", "{disk}/onnx"], spare_kb=8)
    assert_nothing_lost(found)


def test_synth_leaves_no_half_data_set(tmp_path):
    found = on_full_disk(tmp_path, ["synth", "--out", "{disk}/data", "--movies", "12", "--shots", "100-200",
                                    "--feature-dim", "64"], spare_kb=300, size_kb=2048)
    assert_nothing_lost(found)


def test_trailer_keeps_its_cache_whole_and_writes_no_half_trailer(tmp_path):
    pytest.importorskip("av", reason="the video extra is not installed: pip install -e '.[test]'")
    from .video_clips import make_clip

    clip = make_clip(tmp_path / "clip.mp4")
    found = on_full_disk(tmp_path, ["trailer", clip, "--out", "{disk}/tr", "--length", "3"], spare_kb=40, size_kb=4096)
    # shots and features are a cache the next run starts from: kept when whole, as when any later step fails
    cache = ("tr/shots.json", "tr/features.npy", "tr/features.json")
    assert_nothing_lost(found, *cache, log=True)
    for rel in cache[::2]:
        if rel in found["texts"]:
            json.loads(found["texts"][rel])
