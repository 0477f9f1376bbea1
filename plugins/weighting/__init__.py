"""Built-in weightings, one module per strategy, each registered by its own hookimpl."""
