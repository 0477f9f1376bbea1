"""Ready-made spec files, shipped as package data so `hydranet train` finds the demo."""
