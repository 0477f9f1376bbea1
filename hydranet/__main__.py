"""`python -m hydranet` runs the command line (and lets torchrun launch it)."""

import signal
import sys

if __name__ == "__main__":
    try:
        from hydranet.core.cli import main
    except KeyboardInterrupt:  # Ctrl-C while the command line was still importing
        sys.stderr.write("\nstopped by Ctrl-C\n")
        raise SystemExit(128 + signal.SIGINT) from None
    main()  # which turns a Ctrl-C into status 130 itself
