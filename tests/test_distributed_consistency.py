"""What the ranks of a torchrun launch must agree on (data placement) or keep as their own (random states).

One 2-process gloo launch (`distributed_worker.py consistency`) checks both
on the CPU; the rest are one-process checks of the same code paths.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from hydranet.core.batches import choose_placement
from hydranet.core.checkpoint import read_checkpoint
from hydranet.core.distributed import Distributed
from hydranet.core.resume import Progress, capture_generators, rank_generator_states, restore_generators
from test_distributed import WORKER, group_norm_spec, one_process, succeed, torchrun

GIB = 2**30


@pytest.fixture(scope="module")
def two_ranks(faces, tmp_path_factory) -> tuple[Path, list[dict]]:
    """One launch: each rank's placement when rank 1 has almost no memory, and its random states across a resume."""
    out = tmp_path_factory.mktemp("consistency")
    (out / "spec.json").write_text(json.dumps(group_norm_spec(faces, epochs=2, batch_size=32)))
    succeed(torchrun(str(WORKER), "consistency", str(out / "spec.json"), str(out)), timeout=300)
    return out, [torch.load(out / f"consistency.rank{rank}.pt", weights_only=True) for rank in range(2)]


def test_every_rank_places_the_data_as_the_rank_with_least_memory_can(two_ranks):
    """Rank 0 alone would keep the images in memory ("device") and rank 1 stream them: both stream."""
    _, ranks = two_ranks
    assert [rank["placement"] for rank in ranks] == ["stream", "stream"]


def test_each_rank_resumes_with_its_own_random_state(two_ranks):
    """Before, every rank resumed with rank 0's states: rank 1's own draws restarted from rank 0's position."""
    _, ranks = two_ranks
    assert not torch.equal(ranks[0]["saved"], ranks[1]["saved"])  # the ranks drew differently
    for number, rank in enumerate(ranks):
        assert torch.equal(rank["restored"], rank["saved"]), f"rank {number} did not resume with its own state"


def test_a_two_process_checkpoint_resumed_by_one_process_reseeds_the_per_process_generators(two_ranks):
    """Another number of processes: the shared generators are restored, the per-process ones reseeded, and said."""
    out, _ = two_ranks
    progress = Progress.from_dict(read_checkpoint(out / "resumed" / "last.pt")["progress"])
    assert len(progress.process_generators) == 2
    states, unsaved = rank_generator_states(progress, rank=0, world_size=1)
    assert unsaved == "the checkpoint holds the random states of 2 processes, not those of each of this run's 1"
    assert "torch" not in states and "augment" in states
    augment, lines = torch.Generator(), []
    before = torch.get_rng_state()
    try:
        restore_generators(states, augment, nn.Module(), epoch=3, step=0, log=lines.append, unsaved=unsaved)
        assert torch.equal(augment.get_state(), progress.generators["augment"])  # one stream for the global batch
        assert not torch.equal(torch.get_rng_state(), progress.generators["torch"])
    finally:
        torch.set_rng_state(before)
    assert len(lines) == 1 and "reseeded from the run's seed, since the checkpoint holds the random states of " \
                               "2 processes" in lines[0], lines


def test_a_one_process_checkpoint_keeps_its_shape_and_resumes_on_one_process(faces, tmp_path):
    trainer = one_process(group_norm_spec(faces, epochs=1, batch_size=32), tmp_path / "one")
    progress = read_checkpoint(tmp_path / "one" / "last.pt")["progress"]
    assert "process_generators" not in progress  # as before several processes' states were kept
    states, unsaved = rank_generator_states(Progress.from_dict(progress), rank=0, world_size=1)
    assert unsaved is None and states.keys() == progress["generators"].keys()
    assert trainer.dist.world_size == 1


def test_a_checkpoint_from_before_per_process_states_resumed_on_two_reseeds_them():
    """It holds one process's states: rank 1 cannot tell whose they are, so no rank takes them as its own."""
    progress = Progress(generators=capture_generators(torch.Generator(), nn.Module()))
    for rank in range(2):
        states, unsaved = rank_generator_states(progress, rank=rank, world_size=2)
        assert "torch" not in states and unsaved.startswith("the checkpoint holds the random states of 1 process,")


def test_one_process_places_by_its_own_budget_without_a_process_group(monkeypatch):
    """`least` in one process is the identity: no collective, no process group."""
    monkeypatch.setattr(torch.distributed, "all_reduce", lambda *a, **k: pytest.fail("a collective in one process"))
    single = Distributed.single()
    assert single.least([3.0, 5.0]) == [3.0, 5.0]
    assert single.gather_objects({"torch": 1}) == [{"torch": 1}]
    cpu = torch.device("cpu")
    assert choose_placement(GIB, cpu, host_budget_gb=4, least=single.least) == "device"
    assert choose_placement(GIB, cpu, host_budget_gb=4, least=lambda budgets: [b / 8 for b in budgets]) == "stream"


def test_placement_takes_the_least_budget_of_any_rank_on_gpus(monkeypatch):
    """On GPUs each rank measures its own free memory; `least` gives every rank the smallest."""
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (10 * GIB, 80 * GIB))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 0)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 0)
    cuda = torch.device("cuda")
    asked: list[list[float]] = []

    def other_rank_has_less(budgets):
        asked.append(list(budgets))
        return [budgets[0] / 4, budgets[1]]  # another rank's GPU has a quarter free

    assert choose_placement(3 * GIB, cuda, host_budget_gb=100) == "device"
    assert choose_placement(3 * GIB, cuda, host_budget_gb=100, least=other_rank_has_less) == "host"
    assert asked == [[4 * GIB, 100 * GIB]]
    assert choose_placement(3 * GIB, cuda, "device", least=other_rank_has_less) == "device" and len(asked) == 1
