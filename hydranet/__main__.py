"""`python -m hydranet` runs the command line (and lets torchrun launch it)."""

from hydranet.core.cli import main

if __name__ == "__main__":
    main()
