"""Progress bars for the long steps (decoding, detection, embedding, rendering), on stderr."""

from __future__ import annotations

import sys


class _Silent:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def bar(total: int | None, desc: str, enabled: bool):
    """A tqdm bar on stderr when `enabled` (the CLI: a terminal and no --quiet), else a no-op."""
    if not enabled:
        return _Silent()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="frame", file=sys.stderr, dynamic_ncols=True, leave=False)


def default_enabled(quiet: bool) -> bool:
    """Bars are for a person watching a terminal; a log file gets the summary lines alone."""
    return not quiet and sys.stderr.isatty()
