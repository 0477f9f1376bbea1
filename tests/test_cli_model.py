"""Issue 6 end to end, from the command line: train, add a task, fine-tune one head, eval, predict, export.

One module-scoped sequence of three training runs (each a few seconds on
the tiny backbone at 16 px) is shared by every test:

1. age + gender;
2. ethnicity added on that model with the backbone and the old heads frozen;
3. only the age head fine-tuned (backbone, gender, ethnicity frozen).
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

import hydranet
from conftest import DRAWN_DATA, tiny_spec, trained_on
from hydranet.core.cli import cli
from hydranet.core.cli_model import RANGE_NOTE

CLASS_NAMES = {"gender": ["male", "female"], "ethnicity": ["White", "Black", "Asian", "Indian", "Others"]}


def run(*args: str, ok: bool = True):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def write_spec(folder: Path, name: str, faces: Path, tasks: list[str], epochs: int, **extra) -> Path:
    raw = tiny_spec(faces, epochs=epochs, scheduler="none")
    raw.update(tasks=tasks, **extra)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def runs(faces, tmp_path_factory) -> dict[str, Path]:
    """The three runs' best checkpoints, each trained by `hydranet train`."""
    folder = tmp_path_factory.mktemp("issue6")
    first = write_spec(folder, "first", faces, ["age", "gender"], epochs=2)
    run("train", first, "--out", folder / "first", "--no-progress")
    added = write_spec(folder, "added", faces, ["age", "gender", "ethnicity"], epochs=2,
                       init_from=str(folder / "first" / "best.pt"), freeze=["backbone", "age", "gender"])
    run("train", added, "--out", folder / "added", "--no-progress")
    tuned = write_spec(folder, "tuned", faces, ["age", "gender", "ethnicity"], epochs=1,
                       init_from=str(folder / "added" / "best.pt"), freeze=["backbone", "gender", "ethnicity"])
    run("train", tuned, "--out", folder / "tuned", "--no-progress")
    return {name: folder / name / "best.pt" for name in ("first", "added", "tuned")}


@pytest.fixture(scope="module")
def pictures(faces, tmp_path_factory) -> Path:
    """A folder of 6 images (one in a subfolder) and one broken file, as a user's photo folder might be."""
    folder = tmp_path_factory.mktemp("pictures")
    sources = sorted(faces.glob("*.jpg"))[:6]
    (folder / "more").mkdir()
    for i, source in enumerate(sources):
        shutil.copy(source, (folder / "more" if i == 5 else folder) / source.name)
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    (folder / "notes.txt").write_text("not an image, not listed")
    return folder


def raw_outputs(checkpoint: Path, pictures: Path) -> dict[str, torch.Tensor]:
    model = hydranet.load(checkpoint)
    images = torch.stack([model.preprocess(p) for p in sorted(pictures.rglob("*.chip.jpg"))])
    return model.predict_tensor(images)


def test_adding_a_task_on_a_frozen_model_keeps_the_old_heads_bit_identical(runs, pictures):
    before, after = raw_outputs(runs["first"], pictures), raw_outputs(runs["added"], pictures)
    assert set(before) == {"age", "gender"} and set(after) == {"age", "gender", "ethnicity"}
    for task in ("age", "gender"):
        assert torch.equal(before[task], after[task]), task
    log = (runs["added"].parent / "train.log").read_text()
    assert "heads loaded: age, gender; new heads: ethnicity" in log


def test_fine_tuning_the_age_head_changes_only_age(runs, pictures):
    before, after = raw_outputs(runs["added"], pictures), raw_outputs(runs["tuned"], pictures)
    for task in ("gender", "ethnicity"):
        assert torch.equal(before[task], after[task]), task
    assert not torch.equal(before["age"], after["age"])
    # the same through the command line's readable predictions
    old = json.loads(run("predict", runs["added"], pictures, "--json", "--device", "cpu").stdout)
    new = json.loads(run("predict", runs["tuned"], pictures, "--json", "--device", "cpu").stdout)
    assert [(r["file"], r.get("gender"), r.get("ethnicity")) for r in old] == \
           [(r["file"], r.get("gender"), r.get("ethnicity")) for r in new]


def test_eval_prints_metrics_confusion_matrices_and_error_distribution(runs):
    table = run("eval", runs["tuned"], "--device", "cpu").stdout
    assert "beats baseline" in table
    assert "ethnicity: confusion matrix" in table and "gender: confusion matrix" in table
    header = next(line for line in table.splitlines() if line.strip().startswith("true \\ predicted")
                  and "White" in line)
    assert header.split()[3:] == [*CLASS_NAMES["ethnicity"], "total", "recall"]
    rows = {line.split()[0]: line.split() for line in table.splitlines() if line.startswith("  ")}
    for name in CLASS_NAMES["ethnicity"] + CLASS_NAMES["gender"]:
        assert name in rows, name
    assert "age: error distribution (predicted - true, in years)" in table
    assert "|error| quantiles: p50" in table and "MAE" in table and "#" in table


def test_eval_json_has_everything_and_matches_training(runs):
    report = json.loads(run("eval", runs["tuned"], "--json", "--device", "cpu").stdout)
    recorded = torch.load(runs["tuned"], weights_only=True)["metrics"]
    for task, values in report["metrics"].items():
        for metric, value in values.items():
            assert value == pytest.approx(recorded[f"val.{task}.{metric}"], rel=1e-5, abs=1e-6)
    assert set(report["baselines"]) == {"age", "gender", "ethnicity"}
    confusion = report["confusion_matrices"]
    assert set(confusion) == {"gender", "ethnicity"} and set(report["error_distributions"]) == {"age"}
    for task, names in CLASS_NAMES.items():
        assert confusion[task]["classes"] == names
        matrix = confusion[task]["confusion_matrix"]
        assert len(matrix) == len(names) and all(len(row) == len(names) for row in matrix)
        assert sum(map(sum, matrix)) == report["labelled"][task]
    age = report["error_distributions"]["age"]
    assert age["count"] == report["labelled"]["age"] and age["unit"] == "years"
    assert age["mae"] == pytest.approx(report["metrics"]["age"]["mae"], rel=1e-4)
    assert sum(age["histogram"]["counts"]) == age["count"] and len(age["histogram"]["edges"]) == 11
    assert {"bias", "median", "rmse", "abs_error_quantiles"} <= set(age)


def test_eval_on_other_data_with_the_data_shortcut(runs, tmp_path):
    other = tmp_path / "other"
    run("synth", other, "--count", "40", "--size", "32", "--seed", "5")
    report = json.loads(run("eval", runs["tuned"], "--data", other, "--split", "all", "--json",
                            "--device", "cpu").stdout)
    assert report["images"] == 40 and report["split"] == "all"
    missing = run("eval", runs["tuned"], "--data", tmp_path / "nowhere", ok=False)
    assert missing.exit_code == 1 and "nowhere" in missing.output and "Traceback" not in missing.output


def test_predict_csv_json_and_table_on_a_folder(runs, pictures, tmp_path):
    result = run("predict", runs["tuned"], pictures, "--csv", "--device", "cpu")
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert list(rows[0]) == ["file", "age", "gender", "gender_probability", "ethnicity", "ethnicity_probability",
                             "error"]
    assert len(rows) == 7 and sum(1 for r in rows if r["error"]) == 1  # 6 images + broken.jpg; notes.txt skipped
    assert "1 of 7 images could not be read" in result.stderr
    for row in rows:
        if row["file"].endswith("broken.jpg"):
            assert row["age"] == "" and "UnidentifiedImageError" in row["error"]
            continue
        assert 0 < float(row["age"]) < 120
        assert row["gender"] in CLASS_NAMES["gender"] and 0.5 <= float(row["gender_probability"]) <= 1
        assert row["ethnicity"] in CLASS_NAMES["ethnicity"] and 0.2 <= float(row["ethnicity_probability"]) <= 1
    assert any("/more/" in r["file"] for r in rows)

    objects = json.loads(run("predict", runs["tuned"], pictures, "--json", "--device", "cpu").stdout)
    assert [o["file"] for o in objects] == [r["file"] for r in rows]
    good = next(o for o in objects if "error" not in o)
    assert good["age"]["unit"] == "years" and set(good["ethnicity"]["probabilities"]) == set(CLASS_NAMES["ethnicity"])

    table = run("predict", runs["tuned"], pictures, "--device", "cpu").stdout
    assert table.splitlines()[0].split() == ["file", "age", "gender", "ethnicity", "error"] and "years" in table


def test_predict_out_writes_the_file_atomically(runs, pictures, tmp_path):
    out = tmp_path / "preds" / "p.csv"
    result = run("predict", runs["tuned"], pictures, "--out", out, "--device", "cpu")
    assert result.stdout == "" and f"wrote 7 predictions to {out}" in result.stderr
    assert len(list(csv.DictReader(out.open()))) == 7 and [p.name for p in out.parent.iterdir()] == ["p.csv"]
    as_json = tmp_path / "p.json"
    run("predict", runs["tuned"], pictures, "--json", "--out", as_json, "--device", "cpu")
    assert len(json.loads(as_json.read_text())) == 7
    both = run("predict", runs["tuned"], pictures, "--json", "--csv", ok=False)
    assert both.exit_code == 2 and "choose one of --json and --csv" in both.output
    missing = run("predict", runs["tuned"], tmp_path / "no-such-folder", ok=False)
    assert missing.exit_code == 2 and "no-such-folder" in missing.output


def test_export_onnx_from_the_cli_runs_in_onnxruntime(runs, pictures, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    out = tmp_path / "model.onnx"
    printed = run("export", runs["tuned"], "--out", out).stdout
    assert f"wrote {out} (onnx" in printed and "float32 (N, 3, 16, 16)" in printed
    assert "checked against PyTorch" in printed
    assert printed.splitlines()[-1] == RANGE_NOTE  # last, where a reader of the output sees it
    for task in ("age", "gender", "ethnicity"):
        assert f"  {task} " in printed
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    model = hydranet.load(runs["tuned"])
    images = torch.stack([model.preprocess(p) for p in sorted(pictures.rglob("*.chip.jpg"))])
    names = [o.name for o in session.get_outputs()]
    assert names == ["age", "gender", "ethnicity"]
    got = dict(zip(names, session.run(names, {"images": (images.float() / 255).numpy()})))
    expected = model.predict_tensor(images)
    for task in names:
        torch.testing.assert_close(torch.from_numpy(got[task]), expected[task], rtol=1e-4, atol=1e-5)


def test_export_torchscript_default_path_and_errors(runs, tmp_path):
    local = tmp_path / "best.pt"
    shutil.copy(runs["tuned"], local)
    printed = run("export", local, "--format", "torchscript", "--no-check").stdout
    assert f"wrote {tmp_path / 'best.ts.pt'} (torchscript" in printed and "a tuple in this order" in printed
    assert "checked against" not in printed and printed.splitlines()[-1] == RANGE_NOTE
    missing = run("export", tmp_path / "nope.pt", ok=False)
    assert missing.exit_code == 1 and "checkpoint not found" in missing.output and "nope.pt" in missing.output
    (tmp_path / "fake.pt").write_bytes(b"garbage")
    corrupt = run("eval", tmp_path / "fake.pt", ok=False)
    assert corrupt.exit_code == 1 and "cannot read checkpoint" in corrupt.output and "fake.pt" in corrupt.output
    wrong = run("export", local, "--format", "exported", "--opset", "18", ok=False)
    assert wrong.exit_code == 1 and "--opset applies to ONNX only" in wrong.output


def test_export_summary_ends_saying_the_input_range_is_not_checked():
    """The file checks its input's shape and dtype, not its range: 0-255 floats run and give wrong outputs."""
    assert "range" in RANGE_NOTE and "0-255" in RANGE_NOTE and "input.decode" in RANGE_NOTE
    assert "\n" not in RANGE_NOTE


def test_export_format_help_calls_torchscript_deprecated_and_points_to_the_others():
    text = " ".join(CliRunner().invoke(cli, ["export", "--help"]).output.split())
    assert "torchscript (torch.jit.load; deprecated in torch, which warns on loading: prefer exported or onnx)" in text


def test_python_api_predict_matches_the_cli(runs, pictures):
    model = hydranet.load(runs["tuned"])
    files = sorted(pictures.rglob("*.chip.jpg"))
    by_path = model.predict([str(p) for p in files], batch_size=4)
    by_batch = model.predict(torch.stack([model.preprocess(p) for p in files]))
    assert by_path == by_batch and len(by_path) == len(files)
    rows = {r["file"]: r for r in model.predict_files(files)}
    assert [{k: v for k, v in rows[str(p)].items() if k != "file"} for p in files] == by_path


def test_the_commands_are_in_the_generated_cli_reference_and_the_guide():
    root = Path(__file__).resolve().parent.parent
    reference = (root / "docs" / "reference" / "cli.md").read_text(encoding="utf-8")
    guide = (root / "docs" / "guides" / "using-models.md").read_text(encoding="utf-8")
    for command in ("eval", "predict", "export"):
        assert f"\n## hydranet {command}\n" in reference, command
        assert f"hydranet {command} runs/finetune-age/best.pt" in guide, command
    for option in ("--data", "--csv", "--out", "--opset", "--format"):
        assert option in reference, option


# --- bad input to the model commands: clean messages, exit statuses, nothing written ------------------

def test_out_inside_a_file_or_an_unwritable_folder_is_refused_before_any_work(runs, pictures, tmp_path,
                                                                              monkeypatch):
    from hydranet.core import export as export_module
    from hydranet.core.inference import TrainedModel

    def never(*args, **kwargs):
        raise AssertionError("predicted (or exported) although the output cannot be written")

    monkeypatch.setattr(TrainedModel, "predict_files", never)
    for fmt in export_module.FORMATS:
        monkeypatch.setitem(export_module._WRITERS, fmt, never)
    spec = tmp_path / "small.yaml"
    spec.write_text("kept: as it was\n")
    folders = {spec / "p.csv": spec, spec / "sub" / "x.onnx": spec}
    if Path("/proc/self").exists():  # a folder that exists but takes no new files
        folders[Path("/proc/x.onnx")] = Path("/proc")
    for out, at_fault in folders.items():
        for args in (["predict", runs["tuned"], pictures, "--device", "cpu"], ["export", runs["tuned"]]):
            result = run(*args, "--out", out, ok=False)
            assert result.exit_code == 1 and "Traceback" not in result.output, result.output
            assert f"cannot write to the output folder {out.parent}: " in result.output, result.output
            assert f"{at_fault}" in result.output and "--out FILE" in result.output
    assert "small.yaml: it is a file, not a folder" in run("export", runs["tuned"], "--out", spec / "x.onnx",
                                                         ok=False).output
    assert spec.read_text() == "kept: as it was\n"


def test_device_errors_name_the_device_option(runs, pictures, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for args in (["eval", runs["tuned"]], ["predict", runs["tuned"], pictures]):
        result = run(*args, "--device", "cuda", ok=False)
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert "--device: cuda was asked for" in result.output and "use --device auto or cpu" in result.output
        assert "train.device" not in result.output
    assert "--device: 'gpu9' is not a device" in run("eval", runs["tuned"], "--device", "gpu9", ok=False).output


def test_eval_set_takes_only_data_keys(runs):
    result = run("eval", runs["tuned"], "--set", "train.epochs=3", "--device", "cpu", ok=False)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "'train.epochs=3' is not a data.* key" in result.output and "--set data." in result.output
    assert "confusion matrix" not in result.output  # refused, not silently ignored


def test_predict_fails_when_no_image_can_be_read(runs, pictures, tmp_path):
    spec = tmp_path / "small.yaml"
    spec.write_text("not: an image\n")
    result = run("predict", runs["tuned"], spec, "--device", "cpu", ok=False)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"no image could be read (1 file tried):\n  {spec}: not an image" in result.stderr
    out = tmp_path / "old.csv"
    out.write_text("the previous predictions\n")
    written = run("predict", runs["tuned"], spec, pictures / "broken.jpg", "--out", out, "--force", "--device", "cpu",
                  ok=False)  # --force: old.csv is no predictions file, which predict would refuse to replace
    assert written.exit_code == 1 and f"{out} was not written" in written.stderr
    assert out.read_text() == "the previous predictions\n"  # nothing lost for a run with nothing to write
    partial = run("predict", runs["tuned"], spec, pictures, "--device", "cpu")  # some readable: still 0
    assert "1 of 1" not in partial.stderr and "2 of 8 images could not be read" in partial.stderr


def test_the_python_api_names_its_device_argument(monkeypatch):
    from hydranet.core.device import pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(hydranet.HydranetError, match=r"^device: cuda was asked for .*; use device=auto or cpu$"):
        pick_device("cuda", option="device")
    with pytest.raises(hydranet.HydranetError, match=r"^train.device: cuda .*; use train.device=auto or cpu$"):
        pick_device("cuda")


def test_eval_data_reads_a_folder_for_a_model_trained_on_drawn_data_and_never_writes(checkpoint, faces, tmp_path):
    drawn = trained_on(checkpoint, tmp_path / "drawn.pt", **DRAWN_DATA)  # as if trained on drawn faces, as the demo is
    missing = run("eval", drawn, "--data", tmp_path / "myphotos", "--split", "all", "--device", "cpu", ok=False)
    assert missing.exit_code == 1 and "myphotos is not a folder" in missing.output
    assert not (tmp_path / "myphotos").exists()  # not drawn into
    report = json.loads(run("eval", drawn, "--data", faces, "--split", "all", "--json", "--device", "cpu").stdout)
    assert report["images"] == 240  # read as a UTKFace folder, not refused as foreign synthetic faces
    typo = run("eval", drawn, "--data", faces, "--set", "data.rot=x", "--device", "cpu", ok=False)
    assert "data.rot (from --set data.rot=x): unknown field" in typo.output
    help_text = " ".join(run("eval", "--help").output.split())
    assert "reads DIR as a UTKFace folder" in help_text and "Nothing is written to DIR" in help_text


def test_predict_out_counts_its_predictions_in_words(checkpoint, faces, tmp_path):
    one = sorted(faces.glob("*.jpg"))[0]
    result = run("predict", checkpoint, one, "--out", tmp_path / "p.json", "--device", "cpu")
    assert f"wrote 1 prediction to {tmp_path / 'p.json'}" in result.stderr


def test_eval_split_choices_are_those_the_python_api_takes():
    """`--split` spells its choices out (importing inference would slow every command's start); keep them in step."""
    from hydranet.core.inference import SPLITS

    (split,) = [p for p in cli.commands["eval"].params if p.name == "split"]
    assert tuple(split.type.choices) == SPLITS
