"""hydranet-agegroup: an example third-party hydranet plugin (see plugin.py)."""

__version__ = "0.1.0"
