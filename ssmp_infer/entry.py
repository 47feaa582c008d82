"""The `ssmp-infer` console script. It imports nothing heavy, so Ctrl-C is handled from its first moment.

pip's wrapper imports this module and calls `main`. Importing the CLI loads numpy (and a command loads
torch: one to two seconds); here that happens inside `main`, where an interrupt is one line and exit
status 130 instead of a traceback from the middle of an import. `python -m ssmp_infer.cli` still works.
"""

import signal
import sys


def main() -> int:
    try:
        from .cli import main as cli_main  # numpy, argparse, the configs

        code = cli_main()  # handles an interrupt inside a command itself
    except (KeyboardInterrupt, Exception) as e:  # one during the imports above, perhaps wrapped by Python
        from .errors import caused_by_interrupt

        if not caused_by_interrupt(e):
            raise
        print("ssmp-infer: interrupted", file=sys.stderr)
        code = 130
    # The work is done and reported; a Ctrl-C now would only turn the interpreter's exit into a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return code


if __name__ == "__main__":
    sys.exit(main())
