"""The manifest an exported file carries: its input, each output's name, shape and meaning, and how to decode.

Whoever receives the file decodes its outputs with this alone, without the
spec or hydranet (`export.py` writes it into each format). Apart from the
writers because it is about the model's meaning, not about any format.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from hydranet.core.export_formats import INPUT_NAME

if TYPE_CHECKING:
    from hydranet.core.inference import TrainedModel


def output_description(task: Any, not_in_label_units: bool = False) -> dict[str, Any]:
    """What one task's output columns mean, for the manifest and the CLI's summary.

    A regression output is the prediction in the label's units (the task
    contract), with the unit its decode gives; `not_in_label_units` for a
    task whose decode rescales its output (`decode_warnings`).
    """
    from hydranet.core.evaluation import task_unit

    width = int(getattr(task, "out_features", 1))
    entry: dict[str, Any] = {"name": task.name, "shape": ["N", width], "problem": getattr(task, "problem", "")}
    names = getattr(task, "class_names", None)
    if entry["problem"] == "classification" and names:
        entry["class_names"] = list(names)
        entry["meaning"] = (f"logit of P({names[-1]}) (sigmoid gives it)" if width == 1
                            else f"logits over {', '.join(names)} (softmax gives probabilities)")
    elif entry["problem"] == "regression" and not_in_label_units:
        entry["meaning"] = "the head's raw output, not in the label's units (the task's decode rescales it)"
    elif entry["problem"] == "regression":
        unit = task_unit(task)
        entry["unit"] = unit
        entry["meaning"] = f"value in {unit}" if unit else "value in the label's units"
    else:
        entry["meaning"] = "raw head output"
    return entry


#: How hydranet turns an image file into RGB pixels (core/decode.py `to_square_rgb`, `to_rgb`), step by step, for
#: the manifest: a deployment that does less gets other pixels, and other outputs, for every image that is not
#: plain 8-bit RGB. docs/guides/using-models.md ships a `preprocess()` that does exactly this.
DECODING = ("as hydranet decodes image files (PIL): JPEGs opened with Image.draft('RGB', (S, S)); "
            "EXIF orientation applied; "
            "16-bit grayscale (modes I;16*, I) clipped to 0..65535 and shifted right 8 bits (keeps the high byte); "
            "32-bit float grayscale (mode F) scaled by 255 when no value is above 1, else taken as 0..255; "
            "transparent pixels (RGBA, LA, PA, a palette or grayscale image with a transparent colour) composited "
            "over opaque black (0, 0, 0); every other mode through .convert('RGB')")


def build_manifest(trained: TrainedModel, not_in_label_units: Sequence[str] = ()) -> dict[str, Any]:
    size = trained.image_size
    return {
        "format": "hydranet-export",
        "hydranet_version": trained.info.get("hydranet_version"),
        "input": {"name": INPUT_NAME, "shape": ["N", 3, size, size], "dtype": "float32",
                  "range": [0.0, 1.0], "channels": "RGB", "mean": list(trained.mean), "std": list(trained.std),
                  "note": "pixels / 255; the mean/std normalisation is inside the model. Shape and dtype are "
                          "checked, the range is not: 0-255 floats give wrong outputs without an error",
                  "decode": DECODING,
                  "resize": "after decoding, centre-crop to a square and bilinear resize to S "
                            "(PIL ImageOps.fit(image, (S, S), Image.Resampling.BILINEAR))"},
        "outputs": [output_description(task, task.name in not_in_label_units) for task in trained.tasks],
    }


@torch.no_grad()
def decode_warnings(trained: TrainedModel, count: int = 8) -> dict[str, str]:
    """Regression tasks whose decode does more than round the head's output, each with a warning.

    Such a head does not output the label's units, so the exported file's
    output is not what `hydranet predict` shows. Checked on random images.
    """
    from hydranet.core.evaluation import decode_disagreement, decoded_values

    pixels = torch.randint(0, 256, (count, 3, trained.image_size, trained.image_size), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    outputs = trained.predict_tensor(pixels)
    found = {}
    for k, task in enumerate(trained.tasks):
        if getattr(task, "problem", "") != "regression":
            continue
        output = outputs[task.name].float().cpu()
        values = decoded_values(trained.decode_task(k, output))
        off = decode_disagreement(output[:, 0], values)
        if off is not None:
            found[task.name] = (f"output '{task.name}' is the head's raw output, not its prediction in the label's "
                                f"units: the task's decode turns it into other values (typically {off:.3g} apart), "
                                "which the file does not do. A regression head should output the label's units "
                                "(see 'The contract' in docs/plugins/task.md)")
    return found
