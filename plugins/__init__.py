"""Built-in plugins other than tasks: backbones, weightings, datasets."""
