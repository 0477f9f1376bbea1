"""A run resumed on another kind of device (or with another number of GPUs) continues, reproducibly, and says so.

CI has no GPU: a CUDA generator's saved state (16 bytes: Philox seed and
offset) is built by hand, and torch.cuda's functions are replaced where the
code asks for GPUs.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hydranet.core import resume
from hydranet.core.resume import capture_generators, restore_generators

#: What a CUDA generator's get_state() returns: its seed and offset, 8 bytes each.
CUDA_STATE = torch.tensor([7, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0], dtype=torch.uint8)


class CudaLikeGenerator:
    """A stand-in for a torch.Generator on a GPU: 16-byte states only, as torch's CUDA generator checks."""

    device = torch.device("cuda", 0)

    def __init__(self, seed: int = 0):
        self.seed, self.offset = seed, 0

    def get_state(self) -> torch.Tensor:
        return torch.tensor([self.seed, self.offset], dtype=torch.int64).view(torch.uint8)

    def set_state(self, state: torch.Tensor) -> None:
        if state.numel() != 16:
            raise RuntimeError(f"Expected a PhiloxCudaState of size 16 but found the input RNG state size to be "
                               f"{state.numel()}")
        self.seed, self.offset = state.view(torch.int64).tolist()

    def manual_seed(self, seed: int) -> "CudaLikeGenerator":
        self.seed, self.offset = seed, 0
        return self

    def initial_seed(self) -> int:
        return self.seed


class Owning(nn.Module):
    """A weighting that owns a random stream (a torch.Generator attribute)."""

    def __init__(self, seed: int):
        super().__init__()
        self.noise = torch.Generator().manual_seed(seed)


@pytest.fixture(autouse=True)
def global_rng():
    """Restoring sets torch's global random state: the tests after these keep theirs."""
    state = torch.get_rng_state()
    yield
    torch.set_rng_state(state)


def cuda_checkpoint_states(gpus: int = 1) -> dict[str, torch.Tensor]:
    """The generators a run on `gpus` GPUs saved: augmentation and GPU states of 16 bytes, torch's CPU state."""
    states = {"augment": CUDA_STATE.clone(), "torch": torch.Generator().manual_seed(3).get_state(),
              "weighting.noise": CUDA_STATE.clone()}
    states.update({f"cuda:{index}": CUDA_STATE.clone() for index in range(gpus)})
    return states


def fake_gpus(monkeypatch, count: int, *, initialized: bool = True) -> dict:
    """torch.cuda with `count` GPUs whose generators are CPU ones; what set_rng_state was given is recorded."""
    generators = tuple(torch.Generator() for _ in range(count))
    restored: dict[int, torch.Tensor] = {}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: initialized)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "default_generators", generators)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, index: restored.__setitem__(index, state))
    return {"generators": generators, "restored": restored}


def draws(generator: torch.Generator) -> list[float]:
    return torch.rand(4, generator=generator).tolist()


def test_a_cuda_checkpoint_resumes_on_cpu_reseeded_from_the_seed_and_position_and_says_so_once(monkeypatch):
    """Before: set_state raised "Expected a CPUGeneratorImplState of size 5056 ... found 16"."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    states = cuda_checkpoint_states(gpus=2)
    runs = []
    for _ in range(2):
        augment, weighting, lines = torch.Generator().manual_seed(43), Owning(11), []
        restore_generators(states, augment, weighting, epoch=3, step=5, log=lines.append)
        runs.append((draws(augment), draws(weighting.noise), lines))
        assert torch.equal(torch.get_rng_state(), states["torch"])  # the CPU stream fits, and is restored
    assert runs[0][:2] == runs[1][:2]  # reproducible: the same resume draws the same numbers
    lines = runs[0][2]
    assert len(lines) == 1, lines  # augmentation and the weighting's generator changed: one line for both
    assert "epoch 3, step 5" in lines[0] and "another kind of device" in lines[0] and "uninterrupted" in lines[0]
    fresh = torch.Generator().manual_seed(43)
    assert runs[0][0] != draws(fresh)  # not the fresh run's stream either: it depends on the position
    other, lines = torch.Generator().manual_seed(43), []
    restore_generators(states, other, Owning(11), epoch=4, step=0, log=lines.append)
    assert draws(other) != runs[0][0]


def test_a_cpu_checkpoint_resumes_on_a_gpu(monkeypatch):
    """The reverse: a CPU run's 5056-byte states, resumed with CUDA generators, which take 16 bytes only."""
    gpus = fake_gpus(monkeypatch, 2)
    cpu_run = torch.Generator().manual_seed(43)
    states = capture_generators(cpu_run, nn.Module())
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)  # the GPU run has started CUDA
    augment, lines = CudaLikeGenerator(43), []
    restore_generators(states, augment, nn.Module(), epoch=2, step=0, log=lines.append)
    assert augment.seed == resume.resume_seed(43, 2, 0) and augment.offset == 0
    assert len(lines) == 1 and "another kind of device than this run's cuda" in lines[0], lines
    # the GPUs had no saved state: each reseeded, differently, from the run's seed and the position
    seeds = [generator.initial_seed() for generator in gpus["generators"]]
    assert seeds == [resume.resume_seed(torch.initial_seed(), 2, 0, stream=i + 1) for i in range(2)]
    assert seeds[0] != seeds[1] and not gpus["restored"]


def test_a_resume_on_the_same_device_restores_every_state_and_says_nothing(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    augment, weighting = torch.Generator().manual_seed(5), Owning(6)
    draws(augment), draws(weighting.noise)
    states = capture_generators(augment, weighting)
    expected = draws(augment), draws(weighting.noise)
    again, owner, lines = torch.Generator().manual_seed(5), Owning(6), []
    restore_generators(states, again, owner, epoch=7, step=2, log=lines.append)
    assert (draws(again), draws(owner.noise)) == expected and lines == []


def test_gpu_states_saved_with_two_gpus_and_resumed_with_one_or_three(monkeypatch):
    # fewer GPUs: the one there takes its saved state; nothing changes for it
    gpus = fake_gpus(monkeypatch, 1)
    lines: list[str] = []
    restore_generators(cuda_checkpoint_states(gpus=2), CudaLikeGenerator(43), nn.Module(), epoch=2, step=0,
                       log=lines.append)
    assert list(gpus["restored"]) == [0] and lines == []
    # more GPUs: the third has no state and is reseeded; said when the run draws on it
    gpus = fake_gpus(monkeypatch, 3)
    before = gpus["generators"][2].initial_seed()
    restore_generators(cuda_checkpoint_states(gpus=2), CudaLikeGenerator(43), nn.Module(), epoch=2, step=0,
                       log=lines.append)
    assert sorted(gpus["restored"]) == [0, 1] and gpus["generators"][2].initial_seed() != before
    assert lines == []  # a one-process run draws on cuda:0 only, which was restored
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")
    restore_generators(cuda_checkpoint_states(gpus=2), CudaLikeGenerator(43), nn.Module(), epoch=2, step=0,
                       log=lines.append)
    assert len(lines) == 1 and "2 GPUs, none for cuda:2 (this machine has 3)" in lines[0], lines


def test_a_cpu_run_on_a_gpu_machine_leaves_cuda_uninitialized(monkeypatch):
    """CUDA not started (a CPU run): no GPU is reseeded, the saved ones are set lazily, as before."""
    gpus = fake_gpus(monkeypatch, 2, initialized=False)
    states = cuda_checkpoint_states(gpus=1)
    lines: list[str] = []
    restore_generators(states, torch.Generator().manual_seed(1), nn.Module(), epoch=2, step=0, log=lines.append)
    assert list(gpus["restored"]) == [0] and len(lines) == 1
    assert [g.initial_seed() for g in gpus["generators"]] == [torch.Generator().initial_seed()] * 2
