"""The `hydranet` command's entry point; `python -m hydranet` runs it too (and torchrun launches it so).

It lives here, not in `core/cli.py`, because importing the command line imports
torch, which takes a second or two: a Ctrl-C in that time must still end as one
line and status 130, so the import itself has to be inside the `try`.
"""

import signal
import sys


def main() -> None:
    """Console-script entry point: import the command line, then run it."""
    try:
        from hydranet.core.cli import main as run_command_line
    except KeyboardInterrupt:  # Ctrl-C while the command line (torch) was still importing
        sys.stderr.write("\nstopped by Ctrl-C\n")
        raise SystemExit(128 + signal.SIGINT) from None
    run_command_line()  # which turns a later Ctrl-C into status 130 itself


if __name__ == "__main__":
    main()
