"""What a user of a trained model meets in `hydranet eval/predict/export` and `hydranet.load`: checkpoints that
--force must not destroy, a relative data root read from another folder, which epoch a checkpoint holds, lists
of paths (--files-from) and arguments given in the wrong order."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import hydranet
from hydranet.core.checkpoint import is_hydranet_checkpoint
from hydranet.core.checkpoint_stage import Stage, checkpoint_stage
from hydranet.core.cli import cli


def invoke(*args: str, input: str | None = None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


def said(result) -> str:
    return " ".join(result.output.split())


def first_images(faces: Path, count: int) -> list[Path]:
    return sorted(faces.glob("*.jpg"))[:count]


# ------------------------------------------------------------------ a checkpoint is never an --out file


@pytest.fixture
def last_pt(checkpoint, tmp_path) -> Path:
    """A copy of the session's checkpoint named as a run's last.pt, which --out must not replace."""
    return Path(shutil.copy(checkpoint, tmp_path / "last.pt"))


def test_predict_out_never_replaces_another_checkpoint_even_with_force(checkpoint, faces, last_pt):
    before = last_pt.read_bytes()
    result = invoke("predict", checkpoint, first_images(faces, 1)[0], "--out", last_pt, "--force")
    assert result.exit_code == 1
    assert (f"--out {last_pt} is a hydranet checkpoint: writing there would destroy its weights (a last.pt's also "
            "resume its run), so a checkpoint is never replaced, even with --force. Choose another output file; if "
            "you really mean to discard the checkpoint, delete it yourself first.") in said(result)
    assert last_pt.read_bytes() == before


def test_export_out_never_replaces_another_checkpoint_even_with_force(checkpoint, last_pt):
    before = last_pt.read_bytes()
    result = invoke("export", checkpoint, "--format", "torchscript", "--no-check", "--out", last_pt, "--force")
    assert result.exit_code == 1
    assert f"--out {last_pt} is a hydranet checkpoint" in said(result) and "even with --force" in said(result)
    assert last_pt.read_bytes() == before


def test_the_python_export_never_replaces_another_checkpoint_even_with_force(checkpoint, last_pt):
    from hydranet.core.export import ExportError, export_checkpoint

    before = last_pt.read_bytes()
    with pytest.raises(ExportError, match="is a hydranet checkpoint: .* never replaced, even with --force"):
        export_checkpoint(checkpoint, last_pt, "torchscript", check=False, force=True)
    assert last_pt.read_bytes() == before


def test_telling_a_checkpoint_reads_its_marker_not_its_tensors(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load ran"))
    assert is_hydranet_checkpoint(checkpoint)
    torch_file = tmp_path / "other.pt"
    torch.save({"format": "something else", "weights": torch.zeros(3)}, torch_file)
    archive = tmp_path / "plain.zip"
    with zipfile.ZipFile(archive, "w") as out:
        out.writestr("x/data.pkl", b"not hydranet")
    text = tmp_path / "notes.txt"
    text.write_text("hydranet-checkpoint")
    for other in (torch_file, archive, text, tmp_path / "absent.pt", tmp_path):
        assert not is_hydranet_checkpoint(other), other


# ------------------------------------------------------------------ a relative data root


def moved_run(checkpoint: Path, path: Path, root: str, started_in: Path) -> Path:
    """A copy of `checkpoint` whose run read `root` (relative) from the folder `started_in`."""
    saved = torch.load(checkpoint, weights_only=True)
    saved["spec"]["data"]["root"] = root
    saved["started_in"] = str(started_in)
    torch.save(saved, path)
    return path


def other_folder_named(faces: Path, folder: Path, count: int = 40) -> Path:
    """A folder of `count` of the faces, a different data set under the same name as the run's."""
    folder.mkdir(parents=True)
    for image in first_images(faces, count):
        shutil.copy(image, folder / image.name)
    return folder


def test_eval_elsewhere_reads_the_folder_the_run_read_and_names_the_other(checkpoint, faces, tmp_path,
                                                                          monkeypatch):
    best = moved_run(checkpoint, tmp_path / "best.pt", faces.name, faces.parent)
    elsewhere = tmp_path / "elsewhere"
    decoy = other_folder_named(faces, elsewhere / faces.name)
    monkeypatch.chdir(elsewhere)
    result = invoke("eval", best, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert f"val split of {faces}, 60 images;" in said(result)  # the run's 240 images, not the decoy's 40
    assert (f"note: data.root '{faces.name}' is relative to the folder this model's run started in, "
            f"{faces.parent}: evaluating {faces}, the data it trained on, not {decoy} of the same name in the "
            f"current folder. To evaluate that one instead: hydranet eval {best} --data {faces.name}") in said(result)
    chosen = invoke("eval", best, "--device", "cpu", "--data", faces.name, "--json")
    assert chosen.exit_code == 0, chosen.output
    report = json.loads(chosen.stdout)
    assert report["data_root"] == str(decoy) and report["images"] == 10
    assert "note: data.root" not in chosen.output


def test_eval_reads_the_current_folders_data_when_the_runs_is_gone_and_says_so(checkpoint, faces, tmp_path,
                                                                             monkeypatch):
    gone = tmp_path / "gone"
    best = moved_run(checkpoint, tmp_path / "best.pt", faces.name, gone)
    elsewhere = tmp_path / "elsewhere"
    here = other_folder_named(faces, elsewhere / faces.name)
    monkeypatch.chdir(elsewhere)
    result = invoke("eval", best, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert (f"note: the folder this model's run read, {gone / faces.name} (its data.root '{faces.name}' counts "
            f"from {gone}, where the run started), no longer exists; evaluating {here} in the current folder "
            "instead, which may hold other images") in said(result)
    assert f"val split of {here}, 10 images" in said(result)


def test_eval_prints_the_absolute_data_folder_even_in_the_folder_the_run_started_in(checkpoint, faces, tmp_path,
                                                                                  monkeypatch):
    best = moved_run(checkpoint, tmp_path / "best.pt", faces.name, faces.parent)
    monkeypatch.chdir(faces.parent)
    result = invoke("eval", best, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert f"val split of {faces}, 60 images" in said(result) and "note:" not in result.output
    assert hydranet.load(best).evaluate(details=False).data_root == str(faces)


# ------------------------------------------------------------------ which epoch a checkpoint holds


def test_each_kind_of_checkpoint_says_its_epoch_and_where_the_best_is():
    spec = {"train": {"epochs": 20}}
    best = checkpoint_stage({"epoch": 3, "spec": spec})
    assert best == Stage(3, 20, "best", best_epoch=3)
    assert best.summary() == "epoch 3 of 20, the run's best (lowest validation loss) when this best.pt was saved"
    by_metric = checkpoint_stage({"epoch": 3, "spec": {"train": {"epochs": 20, "monitor": "gender.accuracy"}}})
    assert by_metric.summary() == ("epoch 3 of 20, the run's best (best validation gender.accuracy) when this best.pt "
                                   "was saved")
    early = checkpoint_stage({"epoch": 7, "spec": spec, "progress": {"epoch": 8, "step": 0, "best_epoch": 5,
                                                                     "stopped_early": True}})
    assert early.kind == "finished" and early.summary() == (
        "epoch 7 of 20, the last epoch of a run stopped early (train.patience) (its best epoch, 5, is in best.pt)")
    cut = checkpoint_stage({"epoch": 10, "spec": spec, "progress": {"epoch": 11, "step": 37, "best_epoch": 3}})
    assert cut.short() == "epoch 10 of 20 + 37 steps, unfinished run"
    assert cut.summary() == ("epoch 10 of 20 plus 37 training steps of epoch 11: a snapshot of an unfinished run "
                             "(interrupted, or still training), not its final weights; its best epoch so far, 3, "
                             "is in best.pt")
    stopped = checkpoint_stage({"epoch": 11, "spec": spec, "progress": {"epoch": 12, "step": 0, "best_epoch": 3}})
    assert stopped.kind == "unfinished" and stopped.short() == "epoch 11 of 20, unfinished run"
    done = checkpoint_stage({"epoch": 20, "spec": spec, "progress": {"epoch": 21, "step": 0, "best_epoch": 20}})
    assert done.summary() == "epoch 20 of 20, the last epoch of a finished run (also its best)"
    assert checkpoint_stage({"spec": spec}) is None


def test_an_interrupted_runs_last_pt_says_it_is_a_mid_run_snapshot(faces, tmp_path, monkeypatch):
    from test_resume import signalled_run

    components, _, _ = signalled_run(faces, tmp_path, epochs=3, at=14)  # stopped at epoch 2, step 1
    monkeypatch.setattr("hydranet.core.inference.default_components", lambda: components)
    cut, whole = tmp_path / "cut", tmp_path / "whole"
    assert "epoch 1 of 3 + 1 step, unfinished run" in repr(hydranet.load(cut / "last.pt"))
    assert "epoch 3 of 3, finished" in repr(hydranet.load(whole / "last.pt"))
    result = invoke("eval", cut / "last.pt", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(
        f"{cut / 'last.pt'}: epoch 1 of 3 plus 1 training step of epoch 2: a snapshot of an unfinished run "
        "(interrupted, or still training), not its final weights; its best epoch so far, 1, is in best.pt\n")
    report = json.loads(invoke("eval", cut / "best.pt", "--device", "cpu", "--json").stdout)
    assert report["trained"] == {"epoch": 1, "epochs": 3, "kind": "best", "best_epoch": 1, "steps_into_next": 0,
                                 "monitor": "loss", "stopped_early": False,
                                 "summary": "epoch 1 of 3, the run's best (lowest validation loss) when this best.pt "
                                            "was saved"}
    predicted = invoke("predict", cut / "last.pt", first_images(faces, 1)[0])
    assert predicted.exit_code == 0, predicted.output
    assert "note: " in predicted.stderr and "a snapshot of an unfinished run" in predicted.stderr
    assert "snapshot" not in predicted.stdout


# ------------------------------------------------------------------ --files-from


def test_predict_reads_paths_from_a_list_relative_to_its_folder(checkpoint, faces, tmp_path, monkeypatch):
    images = first_images(faces, 3)
    listing = tmp_path / "lists" / "some.txt"
    listing.parent.mkdir()
    listing.write_text("# three faces\n\n" + "\n".join(f"../{faces.name}/{p.name}" for p in images) + "\n")
    (tmp_path / faces.name).symlink_to(faces)
    monkeypatch.chdir(faces)  # anywhere: the list's paths count from its folder
    result = invoke("predict", checkpoint, "--files-from", listing, "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [Path(row["file"]).name for row in rows] == [p.name for p in images]
    assert all(Path(row["file"]).exists() and "error" not in row for row in rows)


def test_predict_reads_paths_from_stdin_with_a_dash(checkpoint, faces):
    images = first_images(faces, 2)
    result = invoke("predict", checkpoint, images[0], "--files-from", "-", "--csv", input=f"{images[1]}\n")
    assert result.exit_code == 0, result.output
    assert [line.split(",")[0] for line in result.stdout.splitlines()[1:]] == [str(images[0]), str(images[1])]


def test_a_listed_path_that_is_not_there_is_refused_with_its_line(checkpoint, faces, tmp_path, monkeypatch):
    listing = tmp_path / "lists" / "some.txt"
    listing.parent.mkdir()
    listing.write_text(f"{first_images(faces, 1)[0]}\n# a comment\nhere.jpg\n")
    (tmp_path / "here.jpg").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    result = invoke("predict", checkpoint, "--files-from", listing)
    assert result.exit_code == 1
    assert (f"--files-from {listing}: 1 listed path not found: line 3: {listing.parent / 'here.jpg'} Relative "
            f"paths in a list count from its folder, {listing.parent}; these are in the current folder: list them "
            f"relative to {listing.parent}, or as absolute paths.") in said(result)


def test_a_list_given_as_an_image_points_to_files_from_and_a_dash_too(checkpoint, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("a.jpg\n")
    result = invoke("predict", checkpoint, listing)
    assert result.exit_code == 1
    assert f"to predict the images a list names, one a line, pass --files-from {listing}" in said(result)
    dash = invoke("predict", checkpoint, "-")
    assert dash.exit_code == 2 and "pass --files-from -" in said(dash)
    nothing = invoke("predict", checkpoint)
    assert nothing.exit_code == 2 and "no images given" in said(nothing)


# ------------------------------------------------------------------ arguments in the wrong order


def test_predict_with_images_before_the_checkpoint_says_the_checkpoint_comes_first(checkpoint, faces):
    result = invoke("predict", faces, checkpoint)
    assert result.exit_code == 2
    assert (f"{faces} is not a checkpoint but {checkpoint} is: the checkpoint comes first: hydranet predict "
            f"{checkpoint} {faces}") in said(result)
    image = first_images(faces, 1)[0]
    swapped = invoke("predict", image, checkpoint, faces)
    assert f"the checkpoint comes first: hydranet predict {checkpoint} {image} {faces}" in said(swapped)
