"""Built-in weightings, one module per weighting, each registered by its own hookimpl."""
