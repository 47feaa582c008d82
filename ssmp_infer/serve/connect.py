"""Joining Ray, or starting it, without waiting for ever.

Ray's driver, given a cluster address whose GCS does not answer, logs "Failed to connect to GCS" every
few seconds and keeps trying; `ray.init()` with no address joins whatever cluster Ray's note on this
machine (`/tmp/ray/ray_current_cluster`) still names, even one that is gone. Both looked like a hang
(a run still waiting after ten minutes; a server that never answered /healthz). Here:

- no address: a new Ray of this process's own (`address="local"`), whatever an old note says;
- an address (HOST:PORT, ray://HOST:PORT, or auto, read from RAY_ADDRESS or the note): its port is tried
  first with a plain TCP connection (PROBE_S), so a cluster that is gone is one sentence in seconds;
- then `ray.init` itself gets CONNECT_S: past it, one sentence and exit 2 (a port that accepts but is
  not a Ray cluster that answers, or one that stops answering midway).
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import sys
import tempfile
import threading
from pathlib import Path

from ..errors import InputError

PROBE_S = 5.0  # a TCP connection to the cluster's port
CONNECT_S = 30.0  # ray.init as a whole: the time after which a cluster "does not answer"
CONNECT_ENV = "SSMP_INFER_RAY_CONNECT_S"  # overrides CONNECT_S (a slow cluster, or a test that cannot wait 30 s)
CURRENT_CLUSTER = Path("/tmp/ray/ray_current_cluster")  # where `ray start` notes the local cluster's address


def cluster_endpoint(address: str) -> tuple[str, int]:
    """(host, port) of a cluster address; auto is read as Ray reads it."""
    if address == "auto":
        found = os.environ.get("RAY_ADDRESS", "").strip()
        if not found:
            try:
                found = CURRENT_CLUSTER.read_text().strip()
            except OSError:
                found = ""
        if not found:
            raise InputError("no running Ray cluster on this machine for address auto; start one (`ray start --head`) "
                             "or give its address")
        address = found
    match = re.fullmatch(r"(?:ray://)?\[?([\w.\-:]+?)\]?:(\d{1,5})", address)
    if match is None:
        raise InputError(f"Ray address {address!r} is not HOST:PORT, ray://HOST:PORT or auto")
    return match.group(1), int(match.group(2))


def probe(address: str) -> None:
    """One sentence unless something accepts connections at the cluster's port within PROBE_S."""
    host, port = cluster_endpoint(address)
    try:
        with socket.create_connection((host, port), timeout=PROBE_S):
            pass
    except OSError as e:
        why = "timed out" if isinstance(e, socket.timeout) else (e.strerror or str(e))
        raise InputError(f"the Ray cluster at {address} does not answer ({host}:{port}: {why}); is it running "
                         "(`ray status`)?") from None


def connect_limit() -> float:
    text = os.environ.get(CONNECT_ENV)
    if text is None:
        return CONNECT_S
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < 86400:
        raise InputError(f"{CONNECT_ENV} must be a number of seconds, got {text!r}")
    return value


def init_ray_keeping_signals(address: str | None, **kwargs) -> None:
    """init_ray for a process whose own SIGTERM and SIGINT handlers must hold through Ray's start-up (serve:
    a signal only asks it to stop). Ray's driver, left to itself, replaces them twice: ray.init sets a
    SIGTERM handler that raises SystemExit wherever the main thread is (a SIGTERM 3-4 s into `serve` ended
    it with status 15 past our drain, or left it hanging), and its C++ core installs Abseil's failure
    handler, which takes SIGTERM as well as crashes (a SIGTERM there printed a C++ stack and aborted,
    status -6). Both are switched off for this process alone: the switch for the second is Ray's own
    (documented as the environment variable RAY_DISABLE_FAILURE_SIGNAL_HANDLER, read when Ray is imported,
    hence set here on the constant it fills); a crash in a replica or a worker still prints its stack.
    (ray.init on another thread keeps the handlers too, but Ray's later calls from the main thread then
    hang in its GCS client: tried.)"""
    from ray._private import ray_constants, utils

    if not (hasattr(ray_constants, "RAY_DISABLE_FAILURE_SIGNAL_HANDLER") and hasattr(utils, "set_sigterm_handler")):
        raise RuntimeError("this Ray is not the one serve was written for: it cannot keep its SIGTERM handler")
    ray_constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER = True
    set_sigterm_handler = utils.set_sigterm_handler
    utils.set_sigterm_handler = lambda handler: None
    try:
        init_ray(address, **kwargs)
    finally:
        utils.set_sigterm_handler = set_sigterm_handler


def init_ray(address: str | None, **kwargs) -> None:
    """ray.init for `address` (None: a Ray of this process's own) that gives up after CONNECT_S."""
    import ray

    limit = connect_limit()
    if address is not None:
        probe(address)
    else:  # a Ray of our own: its processes must not inherit the address of another (RAY_ADDRESS)
        os.environ.pop("RAY_ADDRESS", None)
    with quiet_stderr(address is not None) as stderr_fd:
        done = threading.Event()

        def give_up() -> None:
            if not done.wait(limit):
                where = f"the Ray cluster at {address}" if address is not None else "a local Ray"
                os.write(stderr_fd, f"ssmp-infer: error: {where} did not answer within {limit:g} s\n".encode())
                os._exit(2)  # ray.init cannot be interrupted from another thread; nothing of the user's is open yet

        threading.Thread(target=give_up, daemon=True).start()
        try:
            ray.init(address=address or "local", include_dashboard=False, log_to_driver=False, configure_logging=False,
                     **kwargs)
        finally:
            done.set()


@contextlib.contextmanager
def quiet_stderr(hold: bool):
    """While joining a cluster, hold back what Ray's driver writes to stderr (its "Failed to connect to
    GCS" warning every few seconds while it waits, which would bury the one sentence if the cluster does
    not answer) and write it out once the join is over. Yields the real stderr's descriptor."""
    if not hold:
        yield sys.stderr.fileno()
        return
    sys.stderr.flush()
    real = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield real
        finally:
            os.dup2(real, 2)
            os.close(real)
            held.seek(0)
            sys.stderr.write(held.read().decode(errors="replace"))
            sys.stderr.flush()
