"""Built-in backbones: shapes, memory formats, autocast, and where weights come from.

Backbones are built through the real plugin system (pluggy manager, registry,
params model), as a spec would build them. Nothing here may touch the network:
an autouse fixture makes every download path of torch.hub and torchvision fail.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from pydantic import BaseModel, ValidationError
from torch import nn

from hydranet.core.errors import HydranetError
from hydranet.core.interfaces import Backbone
from hydranet.core.plugins import BUILTIN_PLUGINS, load_components, make_plugin_manager
from hydranet.core.registry import Registry

MODULE = "hydranet.plugins.backbones"

#: Documented feature widths (torchvision's pooled feature vectors; tiny: 4 x width).
FEATURES = {
    "resnet18": 512,
    "resnet34": 512,
    "resnet50": 2048,
    "mobilenet_v3_small": 576,
    "efficientnet_b0": 1280,
    "tiny": 128,
}
TORCHVISION = [name for name in FEATURES if name != "tiny"]
CLASSIFIER = {"resnet18": "fc", "mobilenet_v3_small": "classifier"}  # one of each stripping style


class DownloadAttempted(AssertionError):
    pass


def _refuse_download(*args, **kwargs):
    raise DownloadAttempted(f"a download was attempted: {args} {kwargs}")


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every way torch or torchvision fetches weights raises instead."""
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _refuse_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", _refuse_download)
    api = torchvision.models._api
    if hasattr(api, "load_state_dict_from_url"):
        monkeypatch.setattr(api, "load_state_dict_from_url", _refuse_download)


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub cache, through the public TORCH_HOME variable; returns its checkpoints folder."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)  # undo any earlier torch.hub.set_dir
    assert Path(torch.hub.get_dir()) == tmp_path / "torch" / "hub"
    return tmp_path / "torch" / "hub" / "checkpoints"


@pytest.fixture(scope="module")
def backbones() -> Registry:
    """The registry filled by this plugin alone, so another built-in's failure cannot mask ours."""
    components = load_components(make_plugin_manager(builtins=(MODULE,), entry_points=False))
    assert components.pm.load_errors() == []
    return components.backbones


def build(backbones: Registry, name: str, **params) -> Backbone:
    entry = backbones.get(name)
    return entry.factory(entry.validate_params(params))


def images(size: int = 32, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(size))


def fresh_classifier(name: str) -> nn.Module:
    """A full torchvision classifier (with its fc / classifier), as a downloaded file would hold."""
    return torchvision.models.get_model(name, weights=None)


def assert_loaded(backbone: Backbone, saved: dict[str, torch.Tensor], classifier: str) -> None:
    """Every backbone tensor equals the saved one; only the removed classifier's keys are left over."""
    got = backbone.net.state_dict()
    assert set(saved) - set(got) == {k for k in saved if k.startswith(classifier + ".")}
    for key, value in got.items():
        assert torch.equal(value, saved[key]), key


# ---------------------------------------------------------------- registration


def test_module_is_a_builtin_plugin() -> None:
    assert MODULE in BUILTIN_PLUGINS


def test_registers_the_documented_backbones(backbones: Registry) -> None:
    assert backbones.names() == sorted(FEATURES)
    for entry in backbones:
        assert entry.plugin == MODULE
        assert entry.description
        assert issubclass(entry.params, BaseModel) and entry.params.model_config.get("extra") == "forbid"
        assert all(field.description for field in entry.params.model_fields.values()), entry.name


# ---------------------------------------------------------------- forward


@pytest.mark.parametrize("name", list(FEATURES))
def test_forward_fp32_channels_last_and_bf16(name: str, backbones: Registry) -> None:
    """One build per backbone (resnet50 is not free), checked in the three ways the engine runs it."""
    backbone = build(backbones, name).eval()
    assert isinstance(backbone, Backbone)
    assert backbone.out_features == FEATURES[name]
    x = images()
    with torch.no_grad():
        expected = backbone(x)
        assert expected.shape == (2, FEATURES[name])

        backbone.to(memory_format=torch.channels_last)
        got = backbone(x.contiguous(memory_format=torch.channels_last))
        torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-3)

        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = backbone(x.contiguous(memory_format=torch.channels_last))
    assert low.shape == (2, FEATURES[name])
    assert low.dtype == torch.bfloat16  # the convolutions really ran in bf16
    assert torch.isfinite(low).all()


def test_bf16_autocast_computes_the_same_features(backbones: Registry) -> None:
    """On a shallow net bf16 stays close to fp32 (deep random nets amplify rounding, so tiny only)."""
    backbone = build(backbones, "tiny").eval()
    x = images()
    with torch.no_grad():
        expected = backbone(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = backbone(x).float()
    assert (nn.functional.cosine_similarity(got, expected, dim=1) > 0.99).all()


# ---------------------------------------------------------------- tiny


@pytest.mark.parametrize("size", [8, 16, 32, 64])
def test_tiny_accepts_any_size(size: int, backbones: Registry) -> None:
    with torch.no_grad():
        assert build(backbones, "tiny").eval()(images(size)).shape == (2, 128)


def test_tiny_width_sets_the_features(backbones: Registry) -> None:
    backbone = build(backbones, "tiny", width=8)
    assert backbone.out_features == 32
    assert backbone(images(16)).shape == (2, 32)
    assert sum(p.numel() for p in backbone.parameters()) < sum(p.numel() for p in build(backbones, "tiny").parameters())


def test_tiny_trains(backbones: Registry) -> None:
    """Gradients reach the first layer, so the backbone is learnable end to end."""
    backbone = build(backbones, "tiny", width=4)
    backbone(images(16)).square().mean().backward()
    first = next(backbone.parameters())
    assert first.grad is not None and first.grad.abs().sum() > 0


@pytest.mark.parametrize(("name", "params"), [
    ("tiny", {"widht": 8}),
    ("tiny", {"width": 3}),
    ("resnet18", {"pretrainde": True}),
    ("resnet18", {"small_input": True}),
])
def test_bad_params_rejected(backbones: Registry, name: str, params: dict) -> None:
    with pytest.raises(ValidationError):
        backbones.get(name).validate_params(params)


def test_pretrained_and_weights_together_rejected(backbones: Registry) -> None:
    with pytest.raises(ValidationError, match="not both"):
        backbones.get("resnet18").validate_params({"pretrained": True, "weights": "w.pth"})


# ---------------------------------------------------------------- pretrained: true


def test_the_download_guard_is_effective() -> None:
    """If torchvision's own download path escaped the guard, 'nothing downloads' would prove nothing."""
    with pytest.raises(DownloadAttempted):
        torchvision.models.get_model("resnet18", weights="DEFAULT")


@pytest.mark.parametrize("name", TORCHVISION)
def test_pretrained_without_cached_file_says_where_to_put_it(name: str, backbones: Registry, hub: Path) -> None:
    url = torchvision.models.get_model_weights(name).DEFAULT.url
    expected = hub / url.rsplit("/", 1)[-1]
    with pytest.raises(HydranetError) as raised:
        build(backbones, name, pretrained=True)
    message = str(raised.value)
    assert name in message
    assert str(expected) in message
    assert url in message
    assert "weights:" in message
    assert "pretrained: false" in message


@pytest.mark.parametrize("name", list(CLASSIFIER))
def test_pretrained_loads_the_cached_file(name: str, backbones: Registry, hub: Path) -> None:
    saved = fresh_classifier(name).state_dict()
    hub.mkdir(parents=True)
    torch.save(saved, hub / torchvision.models.get_model_weights(name).DEFAULT.url.rsplit("/", 1)[-1])
    assert_loaded(build(backbones, name, pretrained=True), saved, CLASSIFIER[name])


def test_truncated_cached_file_is_named(backbones: Registry, hub: Path) -> None:
    hub.mkdir(parents=True)
    path = hub / torchvision.models.get_model_weights("resnet18").DEFAULT.url.rsplit("/", 1)[-1]
    path.write_bytes(b"not a torch file")
    with pytest.raises(HydranetError, match="could not read") as raised:
        build(backbones, "resnet18", pretrained=True)
    assert str(path) in str(raised.value)


# ---------------------------------------------------------------- weights: FILE


@pytest.mark.parametrize("name", list(CLASSIFIER))
@pytest.mark.parametrize("with_classifier", [True, False])
def test_weights_file_round_trip(name: str, with_classifier: bool, backbones: Registry, tmp_path: Path) -> None:
    saved = fresh_classifier(name).state_dict()
    if not with_classifier:  # e.g. saved from a hydranet backbone's `net`
        saved = {k: v for k, v in saved.items() if not k.startswith(CLASSIFIER[name] + ".")}
    path = tmp_path / "w.pth"
    torch.save(saved, path)
    assert_loaded(build(backbones, name, weights=str(path)), saved, CLASSIFIER[name])


def test_missing_weights_file_is_named(backbones: Registry, tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "w.pth"
    with pytest.raises(HydranetError, match="does not exist") as raised:
        build(backbones, "resnet18", weights=str(path))
    assert str(path) in str(raised.value)


def test_weights_of_another_architecture_rejected(backbones: Registry, tmp_path: Path) -> None:
    path = tmp_path / "resnet34.pth"
    torch.save(fresh_classifier("resnet34").state_dict(), path)
    with pytest.raises(HydranetError) as raised:
        build(backbones, "resnet18", weights=str(path))
    message = str(raised.value)
    assert str(path) in message
    assert "unexpected keys layer1.2." in message  # resnet34 has a third block where resnet18 stops
    assert "in all)" in message  # the list is cut short, not dumped


def test_weights_with_wrong_shapes_rejected(backbones: Registry, tmp_path: Path) -> None:
    path = tmp_path / "w.pth"
    saved = build(backbones, "resnet18").net.state_dict()
    saved["conv1.weight"] = torch.zeros(8, 3, 7, 7)
    torch.save(saved, path)
    with pytest.raises(HydranetError, match="size mismatch") as raised:
        build(backbones, "resnet18", weights=str(path))
    assert str(path) in str(raised.value)


def test_missing_keys_rejected_not_half_loaded(backbones: Registry, tmp_path: Path) -> None:
    saved = fresh_classifier("resnet18").state_dict()
    del saved["layer4.1.bn2.weight"]
    path = tmp_path / "w.pth"
    torch.save(saved, path)
    with pytest.raises(HydranetError, match="missing keys layer4.1.bn2.weight"):
        build(backbones, "resnet18", weights=str(path))


def test_wrapped_keys_get_a_prefix_hint(backbones: Registry, tmp_path: Path) -> None:
    """A whole-model or DDP state dict is the likely mistake; the message says what to strip."""
    path = tmp_path / "w.pth"
    torch.save({f"backbone.net.{k}": v for k, v in fresh_classifier("resnet18").state_dict().items()}, path)
    with pytest.raises(HydranetError, match="prefixed with 'backbone.net.'"):
        build(backbones, "resnet18", weights=str(path))


@pytest.mark.parametrize("content", [{"epoch": 3}, [torch.zeros(1)]])
def test_weights_file_that_is_not_a_state_dict(content: object, backbones: Registry, tmp_path: Path) -> None:
    path = tmp_path / "w.pth"
    torch.save(content, path)
    with pytest.raises(HydranetError, match="does not hold a state dict") as raised:
        build(backbones, "resnet18", weights=str(path))
    assert str(path) in str(raised.value)


def test_weights_file_with_code_is_refused(backbones: Registry, tmp_path: Path) -> None:
    """weights_only loading: a pickle that would construct arbitrary objects is not executed."""
    path = tmp_path / "w.pth"
    torch.save({"conv1.weight": torch.zeros(1), "evil": Path("x")}, path)
    with pytest.raises(HydranetError, match="holds pickled Python objects, not only tensors") as raised:
        build(backbones, "resnet18", weights=str(path))
    assert "save its state dict instead: torch.save(model.state_dict(), path)" in str(raised.value)
    assert "weights_only set to False" not in str(raised.value)  # torch's advice is not ours to give


def test_a_weights_file_that_is_something_else_says_what_it_is_and_what_to_give(backbones: Registry,
                                                                                 tmp_path: Path) -> None:
    state = fresh_classifier("resnet18").state_dict()
    wrapped, checkpoint, folder, cut = (tmp_path / name for name in ("wrapped.pth", "best.pt", "dir", "cut.pth"))
    torch.save({"epoch": 3, "state_dict": state}, wrapped)
    torch.save({"format": "hydranet-checkpoint", "model": state}, checkpoint)
    folder.mkdir()
    torch.save(state, cut)
    cut.write_bytes(cut.read_bytes()[:5000])
    said = {}
    for path in (wrapped, checkpoint, folder, cut):
        with pytest.raises(HydranetError) as raised:
            build(backbones, "resnet18", weights=str(path))
        said[path.name] = str(raised.value)
    assert "a mapping of 'epoch', 'state_dict'; its 'state_dict' looks like the state dict: save that, " \
           "torch.save(saved['state_dict'], path)" in said["wrapped.pth"]
    assert "a hydranet checkpoint: to start from a run's weights, give it as init_from" in said["best.pt"]
    assert f"backbone weights file {folder} is not a file" in said["dir"]
    assert "; it may be truncated or not a torch file: fetch or save it again" in said["cut.pth"]
    assert ".." not in said["cut.pth"]
