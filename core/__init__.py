"""The hydranet engine: contracts, registries, spec loading and training.

Nothing in here names a concrete task, backbone, weighting or dataset; those
arrive through the plugin manager (`hydranet.core.plugins`).
"""
