"""The Python API (`hydranet.load(CKPT)` and the model it returns) on input a user gets wrong.

Every mistake here used to end in a raw KeyError, AttributeError or a
silently wrong answer; each now gets a hydranet error that says what was
given and what is accepted, or, where the input is reasonable (a numpy array
from PIL or OpenCV, a float tensor in [0, 1], a folder for `predict_files`),
is taken. One checkpoint, trained for one epoch on the tiny backbone at
16 px, serves every test.
"""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import hydranet
from conftest import DRAWN_DATA, trained_on
from hydranet import HydranetError, InputError
from hydranet.core.inference import TrainedModel

S = 16  # tiny_spec's image_size


@pytest.fixture(scope="module")
def model(checkpoint) -> TrainedModel:
    return hydranet.load(checkpoint)


@pytest.fixture(scope="module")
def face(faces) -> Image.Image:
    with Image.open(sorted(faces.glob("*.jpg"))[0]) as image:
        return image.convert("RGB")


def test_input_errors_are_hydranet_errors_and_the_builtin_kinds_callers_catch():
    assert issubclass(InputError, HydranetError)
    assert issubclass(InputError, ValueError) and issubclass(InputError, TypeError)


# --- evaluate -----------------------------------------------------------------------------------------

def test_evaluate_an_unknown_split_names_the_splits_and_the_way_to_held_out_data(model):
    with pytest.raises(InputError) as caught:
        model.evaluate(split="holdout")
    message = str(caught.value)
    assert "'holdout' is not a split; splits: val, train, all, test" in message
    assert "data.root=DIR" in message and "split='all'" in message
    with pytest.raises(InputError, match=r"^'VAL' is not a split; did you mean 'val'\? splits: val, train, all, test"):
        model.evaluate(split="VAL")


def test_evaluate_takes_one_override_as_a_string(model, faces):
    as_string = model.evaluate("data.val_fraction=0.5", details=False)
    as_list = model.evaluate(["data.val_fraction=0.5"], details=False)
    assert as_string.images == as_list.images == 120  # half of the 240 faces, not an error about 'd'
    with pytest.raises(InputError, match=r"overrides are 'data.KEY=VALUE' strings, one or a list .*; got int 3"):
        model.evaluate([3])


@pytest.mark.parametrize("overrides, expected", [
    ("data.rot=faces", r"data.rot \(from overrides 'data.rot=faces'\): unknown field; did you mean 'root'\?"),
    ("data.root", r"overrides: 'data.root' is not of the form data.KEY=VALUE \(e.g. overrides='data.root=DIR'"),
    ("train.epochs=3", r"^override 'train.epochs=3' is not a data.\* key: .*\(e.g. overrides='data.root=DIR'"),
    (5, r"overrides are 'data.KEY=VALUE' strings, one or a list .*; got int 5"),
    ({"data.root": "x"}, r"overrides are 'data.KEY=VALUE' strings, one or a list .*; got a dict of 1 item"),
    ("data.val_fraction=[", r"overrides \(data.val_fraction\): "),
])
def test_evaluate_messages_name_the_overrides_argument_not_the_cli_option(model, overrides, expected):
    with pytest.raises(HydranetError, match=expected) as caught:
        model.evaluate(overrides)
    assert "--set" not in str(caught.value)


def as_trained_on(checkpoint, folder, **data) -> TrainedModel:
    """The model, as if trained on other data: only its stored data section differs."""
    return hydranet.load(trained_on(checkpoint, folder / "best.pt", **data))


@pytest.fixture(scope="module")
def drawn(checkpoint, tmp_path_factory) -> TrainedModel:
    """Trained on the synthetic dataset, as the demo is."""
    return as_trained_on(checkpoint, tmp_path_factory.mktemp("drawn"), **DRAWN_DATA)


def test_evaluate_on_a_folder_reads_it_for_a_model_trained_on_drawn_data_and_writes_nothing(drawn, faces,
                                                                                             tmp_path):
    before = sorted(faces.iterdir())
    evaluation = drawn.evaluate([f"data.root={faces}", "data.val_fraction=0.5"], split="all", details=False)
    assert evaluation.images == 240 and sorted(faces.iterdir()) == before  # read as UTKFace, nothing drawn
    assert drawn.evaluate(f"data.root={faces}", details=False).images == 60  # val_fraction 0.25 kept
    with pytest.raises(hydranet.DataError, match=rf"^{tmp_path / 'mine'} is not a folder: data.root names an "
                                                 r"existing folder .*'utkface' dataset \(labels in the file names\)"):
        drawn.evaluate(f"data.root={tmp_path / 'mine'}", split="all")
    assert not (tmp_path / "mine").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(hydranet.DataError, match=r"^no .* images in"):
        drawn.evaluate(f"data.root={tmp_path / 'empty'}", split="all")
    assert list((tmp_path / "empty").iterdir()) == []


def test_evaluate_on_a_folder_of_a_folder_dataset_model_sets_its_root(checkpoint, faces, tmp_path):
    photos = tmp_path / "photos"  # images and a labels.csv, the folder dataset's format
    photos.mkdir()
    rows = ["file,age,gender,race"]
    for source in sorted(faces.glob("*.jpg"))[:20]:
        shutil.copy(source, photos / source.name)
        rows.append(",".join([source.name, *source.name.split("_")[:3]]))
    (photos / "labels.csv").write_text("\n".join(rows[:13]) + "\n")  # 12 of the 20 images are labelled
    model = as_trained_on(checkpoint, tmp_path, name="folder", root=str(tmp_path / "elsewhere"), csv=None,
                          file_column="file")
    assert model.evaluate(f"data.root={photos}", split="all", details=False).images == 12  # its CSV, not UTKFace


# --- predict: what it accepts ---------------------------------------------------------------------

def test_predict_takes_a_numpy_array_as_one_rgb_image_like_pil(model, face):
    array = np.asarray(face)  # (H, W, 3) uint8, as PIL and OpenCV give
    assert array.shape[2] == 3 and array.dtype == np.uint8
    from_pil = model.predict(face)
    assert model.predict(array) == from_pil
    assert model.predict([array, face]) == from_pil * 2
    assert model.predict(np.stack([array, array])) == from_pil * 2  # (N, H, W, C): N images
    bgr = np.ascontiguousarray(array[..., ::-1])
    assert model.predict(bgr[..., ::-1]) == from_pil  # a flipped (strided) view is fine
    assert torch.equal(model.preprocess(array), model.preprocess(face))


def test_predict_takes_grayscale_and_rgba_arrays(model, face):
    gray = np.asarray(face.convert("L"))
    assert gray.ndim == 2
    assert model.predict(gray) == model.predict(face.convert("L"))
    assert model.predict(gray[:, :, None]) == model.predict(gray)
    rgba = np.asarray(face.convert("RGBA"))
    assert model.predict(rgba) == model.predict(face.convert("RGBA"))


def test_predict_refuses_arrays_it_cannot_read_as_an_image(model, face):
    array = np.asarray(face)
    with pytest.raises(InputError, match=r"numpy float64 array .* must be uint8 .*astype\('uint8'\)"):
        model.predict(array / 255.0)
    with pytest.raises(InputError, match=r"channels first.*array.transpose\(1, 2, 0\)"):
        model.predict(np.ascontiguousarray(array.transpose(2, 0, 1)))
    with pytest.raises(InputError, match=r"shape \(4, 4, 2\).*\(H, W\) or \(H, W, C\) with C 1, 3 or 4"):
        model.predict(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(InputError, match=r"empty"):
        model.predict(np.zeros((0, 4, 3), np.uint8))
    with pytest.raises(InputError, match=r"shape \(2, 16, 16, 3\) is not an image.*For a batch \(N, H, W, C\), "
                                         r"pass it to predict as a whole"):
        model.predict([np.zeros((2, S, S, 3), np.uint8)])  # the batch inside a list, as the tensor case says too


def test_predict_takes_tensors_of_any_size_and_float_in_0_1(model, face):
    pixels = model.preprocess(face)  # uint8 (3, S, S)
    expected = model.predict(pixels)
    assert model.predict(pixels.float() / 255) == expected
    assert model.predict((pixels.float() / 255)[None]) == expected
    native = torch.from_numpy(np.asarray(face).transpose(2, 0, 1).copy())  # (3, H, W) as torchvision read_image
    assert native.shape[1:] != (S, S)
    assert model.predict(native) == model.predict(face)
    with pytest.raises(InputError, match=r"values from \d+ to \d+; a float tensor must be in \[0, 1\].*torch.uint8"):
        model.predict(pixels.float())
    with pytest.raises(InputError, match=r"channels last.*permute\(2, 0, 1\)"):
        model.predict(pixels.permute(1, 2, 0).contiguous())
    with pytest.raises(InputError, match=r"torch.int64 .*uint8"):
        model.predict(pixels.long())


def test_predict_takes_tensors_that_require_grad_without_torch_warning(model, face):
    pixels = model.preprocess(face).float() / 255
    expected = model.predict(pixels)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch: "Converting a tensor with requires_grad=True to a scalar ..."
        assert model.predict(pixels.clone().requires_grad_()) == expected
        assert model.predict(pixels[None].clone().requires_grad_()) == expected
        grad = model.predict_tensor(pixels[None].clone().requires_grad_())
    for task, value in model.predict_tensor(pixels[None]).items():
        assert torch.equal(grad[task], value) and not grad[task].requires_grad


def test_predict_on_a_folder_points_to_predict_files(model, faces):
    with pytest.raises(InputError) as caught:
        model.predict(faces)
    assert f"{faces} is a folder" in str(caught.value) and "predict_files" in str(caught.value)
    with pytest.raises(InputError, match="is a folder"):
        model.predict([str(faces)])


def test_predict_names_a_missing_or_unreadable_file(model, tmp_path):
    with pytest.raises(InputError, match=rf"cannot read image {tmp_path / 'nope.jpg'}: file not found"):
        model.predict(tmp_path / "nope.jpg")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(InputError, match=rf"cannot read image {broken}: not an image.*predict_files"):
        model.predict([str(broken)])


def test_predict_refuses_what_is_not_an_image_and_a_bad_batch_size(model, face):
    for wrong in (5, None, {"a": 1}, b"bytes"):
        with pytest.raises(InputError, match=r"predict takes image files .*PIL images, numpy arrays .*tensors"):
            model.predict(wrong)
    with pytest.raises(InputError, match=r"images\[1\] is int 7; predict takes image files"):
        model.predict([face, 7])
    for size in (0, -1, 2.5, True):
        with pytest.raises(InputError, match=r"batch_size must be a whole number >= 1"):
            model.predict(face, batch_size=size)
    assert model.predict([]) == []


# --- predict_tensor: the contract is checked --------------------------------------------------------

def test_predict_tensor_takes_uint8_or_float_in_0_1_with_the_same_answer(model):
    pixels = torch.randint(0, 256, (3, 3, S, S), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    as_uint8 = model.predict_tensor(pixels)
    for dtype in (torch.float32, torch.float64):
        as_float = model.predict_tensor(pixels.to(dtype) / 255)
        for task, value in as_uint8.items():
            torch.testing.assert_close(as_float[task], value, rtol=1e-5, atol=1e-5)
    empty = model.predict_tensor(pixels[:0])
    assert all(v.shape[0] == 0 for v in empty.values())


@pytest.mark.parametrize("images, expected", [
    (torch.zeros(3, S, S, dtype=torch.uint8), r"a batch \(N, 3, 16, 16\); got a torch.uint8 tensor of shape "
                                              r"\(3, 16, 16\).*unsqueeze\(0\)"),
    (torch.zeros(2, 1, S, S, dtype=torch.uint8), r"3 channels \(RGB\) in dimension 1, \(N, 3, 16, 16\); got .* \(2, 1, 16, 16\).*expand\(-1, 3, -1, -1\)"),
    (torch.zeros(2, S, S, 3, dtype=torch.uint8), r"3 channels \(RGB\) in dimension 1.*channels last.*permute\(0, 3, 1, 2\)"),
    (torch.zeros(2, 3, 20, 20, dtype=torch.uint8), r"16x16 .*got 20x20.*not resized.*model.predict"),
    (torch.zeros(2, 3, S, S, dtype=torch.int64), r"dtype torch.int64; expected torch.uint8 .* or a float"),
    (torch.zeros(2, 3, S, S, dtype=torch.bool), r"dtype torch.bool"),
    (torch.full((2, 3, S, S), 200.0), r"values from 200 to 200; a float tensor must be in \[0, 1\]"),
    (torch.full((2, 3, S, S), -0.5), r"values from -0.5 to -0.5"),
    (torch.full((2, 3, S, S), float("nan")), r"values from nan to nan"),
    (np.zeros((2, 3, S, S), np.uint8), r"takes a torch.Tensor \(N, 3, 16, 16\); got a numpy uint8 array.*torch.from_numpy"),
    ([torch.zeros(3, S, S)], r"takes a torch.Tensor \(N, 3, 16, 16\); got a list of 1 item\. .*use predict\(\)"),
])
def test_predict_tensor_says_what_it_was_given_and_what_it_expects(model, images, expected):
    with pytest.raises(InputError, match=expected):
        model.predict_tensor(images)


# --- predict_files: files and folders, as `hydranet predict` takes them -------------------------------

def test_predict_files_takes_a_folder_or_one_path_like_the_cli(model, faces):
    files = sorted(faces.glob("*.jpg"))
    rows = model.predict_files(faces)
    assert [row["file"] for row in rows] == [str(p) for p in files]
    assert model.predict_files(str(files[0])) == rows[:1]
    assert model.predict_files([files[0], str(files[1])]) == rows[:2]
    assert model.predict_files([]) == []


def test_predict_files_refuses_missing_paths_non_paths_and_folders_without_images(model, face, tmp_path):
    with pytest.raises(InputError, match=rf"not found: {tmp_path / 'nope.jpg'}"):
        model.predict_files([tmp_path / "nope.jpg"])
    with pytest.raises(InputError, match=r"^not found: nope/\. predict_files takes paths of image files and folders "
                                         r"that exist .*e\.g\. predict_files\('photos/'\)"):
        model.predict_files("nope/")
    with pytest.raises(InputError, match=r"predict_files takes paths .*got Image .*use predict\(\)"):
        model.predict_files([face])
    (tmp_path / "notes.txt").write_text("no image here")
    with pytest.raises(InputError, match=rf"no image files found in: {tmp_path} \(looked for .jpg"):
        model.predict_files(tmp_path)
    with pytest.raises(InputError, match=r"batch_size must be a whole number >= 1"):
        model.predict_files(tmp_path / "notes.txt", batch_size=0)


# --- load ---------------------------------------------------------------------------------------------

def test_load_names_a_wrong_path_type_and_a_wrong_device(checkpoint, monkeypatch):
    with pytest.raises(HydranetError, match=r"checkpoint must be a path \(str or pathlib.Path\); got NoneType"):
        hydranet.load(None)
    with pytest.raises(HydranetError, match=r"device must be .*; got a list of 1 item"):
        hydranet.load(checkpoint, device=["cpu"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in (0, torch.device("cuda")):  # an index is torch's way to say cuda:N
        with pytest.raises(HydranetError, match=r"^device: cuda was asked for .*; use device=auto or cpu$"):
            hydranet.load(checkpoint, device=device)
    assert hydranet.load(checkpoint, device=torch.device("cpu")).device == torch.device("cpu")


def test_a_loaded_model_prints_its_checkpoint_backbone_tasks_and_device(model, checkpoint):
    """`print(model)` in a notebook said only `<hydranet.core.inference.TrainedModel object at 0x...>`."""
    assert repr(model) == (f"TrainedModel({str(checkpoint)!r}, epoch 1 of 1, best, backbone tiny, tasks age, "
                           "gender, ethnicity, "
                           "image_size 16, device cpu)")
    assert model.path == checkpoint


def test_dir_of_hydranet_lists_the_api_and_no_future_import():
    names = dir(hydranet)
    assert "annotations" not in names  # `from __future__ import annotations` is not part of the API
    assert set(hydranet.__all__) <= set(names)
