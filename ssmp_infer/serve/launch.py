"""Start `ssmp-infer serve` as a child process and wait until it answers: for the load test and the tests.

The server is started exactly as a user would start it (the console command's module, its flags), on a
free loopback port, and stopped with SIGTERM, the signal that drains it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ServerProcess:
    """`with ServerProcess(["--max-batch-size", "8"]) as server: server.url` (stderr kept in `server.log`)."""

    def __init__(self, flags: list[str] = (), host: str = "127.0.0.1", port: int | None = None, start_timeout: float = 300):
        self.host, self.port = host, port or free_port(host)
        self.url = f"http://{self.host}:{self.port}"
        self.flags, self.start_timeout = [str(f) for f in flags], start_timeout
        self.log: list[str] = []
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "ServerProcess":
        cmd = [sys.executable, "-m", "ssmp_infer.entry", "serve", "--host", self.host, "--port", str(self.port), *self.flags]
        self.process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                        env={**os.environ, "PYTHONWARNINGS": "ignore"})
        threading.Thread(target=self._read_log, daemon=True).start()
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ssmp-infer serve exited with status {self.process.returncode}:\n" + "".join(self.log[-20:]))
            if self.healthy():
                return self
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"ssmp-infer serve did not answer within {self.start_timeout:g} s:\n" + "".join(self.log[-20:]))

    def _read_log(self) -> None:
        for line in self.process.stderr:
            self.log.append(line)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=5) as r:
                return json.loads(r.read()).get("status") == "ok"
        except (OSError, ValueError):
            return False

    def metrics_text(self) -> str:
        with urllib.request.urlopen(self.url + "/metrics", timeout=30) as r:
            return r.read().decode()

    def terminate(self) -> None:
        """SIGTERM: the server refuses new requests, finishes those in progress, then exits."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 180) -> int:
        self.terminate()
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()  # our own child, by its id
            return self.process.wait()

    def __exit__(self, *exc) -> None:
        if self.process is not None:
            self.stop()
