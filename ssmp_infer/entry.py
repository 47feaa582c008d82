"""The `ssmp-infer` console script. It imports nothing heavy, so Ctrl-C is handled from its first moment.

pip's wrapper imports this module and calls `main`. Importing the CLI loads numpy, and every command
loads torch (one to two seconds); here that happens inside `main`, where an interrupt is one line and
exit status 130 instead of a traceback from the middle of an import. `python -m ssmp_infer.cli` still
works.

While those libraries load, a Ctrl-C is noted and acted on once they are loaded, not raised where it
lands: raised inside numpy's C initialisation it surfaces as an unrelated ImportError, and inside one
of torch's C++ callbacks into Python it escapes as a C++ exception that aborts the process (both seen
by the fuzz suite's Ctrl-C cases). After the imports a Ctrl-C raises KeyboardInterrupt at once, and
any error that follows one is reported as the interrupt.
"""

import signal
import sys

_interrupted = False


def _note_interrupt(signum, frame) -> None:
    """While numpy and torch load: remember the Ctrl-C, raise nothing inside their initialisation."""
    global _interrupted
    _interrupted = True


def _raise_interrupt(signum, frame) -> None:
    """Python's default handler, remembered: an error it causes (wrapped or not) is the interrupt."""
    global _interrupted
    _interrupted = True
    raise KeyboardInterrupt


def _needs_torch(argv: list[str]) -> bool:
    """Every command loads torch; `--help`, `--version` and a bare `ssmp-infer` do not."""
    return bool(argv) and not {"-h", "--help", "--version"} & set(argv)


def main() -> int:
    signal.signal(signal.SIGINT, _note_interrupt)
    code = None  # stays None when a Ctrl-C stopped us before the command could report it
    try:
        from .cli import main as cli_main  # numpy, argparse, the configs

        if _needs_torch(sys.argv[1:]):
            import torch  # noqa: F401  loaded here, under the noting handler, rather than by the command
        if not _interrupted:
            signal.signal(signal.SIGINT, _raise_interrupt)
            code = cli_main()  # reports an interrupt inside a command itself (130)
    except (KeyboardInterrupt, Exception) as e:  # one in a command's own late imports, perhaps wrapped
        from .errors import caused_by_interrupt

        if not (_interrupted or caused_by_interrupt(e)):
            raise
    if code is None:
        print("ssmp-infer: interrupted", file=sys.stderr)
        code = 130
    # The work is done and reported; a Ctrl-C now would only turn the interpreter's exit into a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return code


if __name__ == "__main__":
    sys.exit(main())
