"""A dataset plugin: `jsonl`, images listed in a JSON-lines file with their labels.

Each line of `labels.jsonl` names an image (relative to the folder) and gives
any labels: `{"image": "a.jpg", "age": 31, "smile": true}`. A dataset only
lists samples: an image source plus a record of raw label fields (strings);
each task reads the field its `label` names and decides what is valid.
hydranet decodes every image once into its cache. Use it in a spec:
`data: {name: jsonl, root: data/people}`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

import hydranet
from hydranet.core.errors import DataError


class JsonlParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    root: str = Field(description="Folder of images; the file names in the JSON lines are relative to it.")
    file: str = Field("labels.jsonl", description="JSON-lines file, relative to root.")
    image_key: str = Field("image", description="Key that names each line's image.")


def raw_field(value: Any) -> str:
    """Records hold strings, as if read from a CSV: true/false become 1/0 (a binary task's classes)."""
    return str(int(value)) if isinstance(value, bool) else str(value)


class JsonlDataset(hydranet.Dataset):
    """Images listed in a JSON-lines file, one object per line with the image's labels."""

    def __init__(self, params: JsonlParams):
        self.root = Path(params.root)
        self.file = self.root / params.file
        self.image_key = params.image_key

    def samples(self) -> list[hydranet.Sample]:
        if not self.file.is_file():
            raise DataError(f"{self.file} not found; set data.root to the folder that holds {self.file.name}, "
                            f"or data.file to the JSON-lines file")
        self.problems.clear()  # listing twice must not report every problem twice
        samples = []
        lines = self.file.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, start=1):
            where = f"{self.file}:{number}"
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                self.report_problem(where, f"not JSON: {error.msg}")  # listed in train.log, skipped
                continue
            image = row.pop(self.image_key, None) if isinstance(row, dict) else None
            if not isinstance(image, str) or not (self.root / image).is_file():
                self.report_problem(where, f"no image file under key '{self.image_key}'")
                continue
            record = {key: raw_field(value) for key, value in row.items() if value is not None}
            samples.append(hydranet.Sample(str(self.root / image), record))
        return samples


@hydranet.hookimpl
def register_datasets(register: Any) -> None:
    register("jsonl", JsonlDataset, params=JsonlParams)
