"""Weightings that LibMTL or torchjd offer and hydranet does not build in, by the names people type for them.

Without this, an unknown name gets a did-you-mean by spelling alone, and
`gradvac` was answered "did you mean 'upgrad'?", `graddrop` "did you mean
'gradnorm'?": other methods. For these names hydranet says instead that the
method is not built in and how a plugin adds it. Plain data, so the registry
can hold it without importing torch.
"""

from __future__ import annotations

import re

#: normalised name (`normalised`) -> how to name the method in a message
WEIGHTINGS_NOT_BUILT_IN = {
    "gradvac": "GradVac (LibMTL, torchjd)",
    "graddrop": "GradDrop (LibMTL, torchjd)",
    "moco": "MoCo (LibMTL)",
    "stch": "STCH (LibMTL)",
    "excessmtl": "ExcessMTL (LibMTL)",
    "fairgrad": "FairGrad (LibMTL)",
    "modo": "MoDo (LibMTL)",
    "sdmgrad": "SDMGrad (LibMTL)",
    "config": "ConFIG (torchjd)",
    "dualproj": "DualProj (torchjd)",
    "krum": "Krum (torchjd)",
    "trimmedmean": "TrimmedMean (torchjd)",
}


def normalised(name: str) -> str:
    """`Nash_MTL`, `nash-mtl` and `NashMTL` alike: lower case, without `_`, `-` or spaces."""
    return re.sub(r"[-_ ]", "", name.lower())
