"""Run one `ssmp-infer` command on a nearly full file system; print what it left, as JSON.

Runs inside `unshare -rm` (a user and mount namespace of its own: the tmpfs it mounts is seen by
nothing outside, and vanishes with it), called by tests/test_full_disk.py:

    unshare -rm python tests/full_disk_driver.py SPEC.json

SPEC: {"disk": DIR (an empty directory to mount on), "size_kb": tmpfs size, "spare_kb": room left free
after the filler, "before": {relative path: text} (the user's files already on the disk),
"argv": the command's arguments ({disk} in them is the mount point)}.
"""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

FILLER = ".filler"


def snapshot(root: Path) -> dict:
    out = {}
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if rel != FILLER:
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def fill(root: Path, spare: int) -> None:
    """Write a filler file until only `spare` bytes are free."""
    with open(root / FILLER, "wb") as f:
        chunk = b"\0" * 65536
        while True:
            left = os.statvfs(root).f_bavail * os.statvfs(root).f_frsize - spare
            if left <= 0:
                break
            try:
                f.write(chunk[: min(len(chunk), left)])
                f.flush()
            except OSError:
                break


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    disk = Path(spec["disk"])
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={spec['size_kb']}k", "tmpfs", str(disk)], check=True)
    for rel, text in spec.get("before", {}).items():
        (disk / rel).parent.mkdir(parents=True, exist_ok=True)
        (disk / rel).write_text(text)
    fill(disk, spec["spare_kb"] * 1024)
    before = snapshot(disk)
    argv = [a.replace("{disk}", str(disk)) for a in spec["argv"]]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "ssmp_infer.cli", *argv], capture_output=True, text=True, env=env,
                          timeout=600)
    after = snapshot(disk)
    texts = {}
    for rel in after:
        if rel.endswith((".json", ".jsonl", ".edl", ".otio")):
            texts[rel] = (disk / rel).read_text(errors="replace")
    print(json.dumps({"rc": proc.returncode, "stderr": proc.stderr, "stdout": proc.stdout, "before": before,
                      "after": after, "texts": texts}))


if __name__ == "__main__":
    main()
