"""The `hydranet` command's entry point; `python -m hydranet` runs it too (and torchrun launches it so).

It lives here, not in `core/cli.py`, because a Ctrl-C while the command line
imports must still end as one line and status 130, so the import itself has to
be inside the `try`. (The command line imports no torch until a command needs
it, in the group's own `invoke`, which handles a Ctrl-C there.)
"""

import signal
import sys


def main() -> None:
    """Console-script entry point: import the command line, then run it."""
    try:
        from hydranet.core.cli import main as run_command_line
    except KeyboardInterrupt:  # Ctrl-C while the command line was still importing
        sys.stderr.write("\nstopped by Ctrl-C\n")
        raise SystemExit(128 + signal.SIGINT) from None
    run_command_line()  # which turns a later Ctrl-C into status 130 itself


if __name__ == "__main__":
    main()
