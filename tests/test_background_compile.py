"""train.compile_in_background: a child process compiles into the caches while the run trains uncompiled.

The switch happens whenever the child is done, which in a real run depends on
timing; here `BackgroundCompile.done` is wrapped so that it waits for the
child at a chosen step, which makes the switch step known.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import hydranet
from conftest import tiny_spec
from hydranet.core import background_compile
from hydranet.core.background_compile import BackgroundCompile, blockers
from hydranet.core.spec import load_spec


@pytest.fixture
def fresh_compiler_cache(tmp_path, monkeypatch) -> Path:
    """An empty on-disk compiler cache, seen by this process and the child alike."""
    cache = tmp_path / "inductor"
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(cache))
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "triton"))
    return cache


@pytest.fixture
def children(monkeypatch) -> list[BackgroundCompile]:
    """Every BackgroundCompile the runs start, to look at afterwards."""
    started: list[BackgroundCompile] = []
    original = BackgroundCompile.__init__

    def recording_init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        started.append(self)

    monkeypatch.setattr(BackgroundCompile, "__init__", recording_init)
    return started


def done_at_call(monkeypatch, call: int | None) -> None:
    """Make `done()` say no until its `call`-th check, then wait for the child (None: never done)."""
    calls = {"n": 0}

    def done(self) -> bool:
        calls["n"] += 1
        return call is not None and calls["n"] >= call and self.wait()

    monkeypatch.setattr(BackgroundCompile, "done", done)


def background_spec(faces, components, **train):
    raw = tiny_spec(faces, epochs=1, batch_size=16, compile=True, compile_in_background=True, **train)
    return load_spec(raw, components=components)


def cache_counters() -> dict[str, int]:
    from torch._dynamo.utils import counters
    return {"hit": counters["inductor"]["fxgraph_cache_hit"], "miss": counters["inductor"]["fxgraph_cache_miss"]}


def test_the_run_compiles_from_what_the_child_put_in_the_cache(faces, tmp_path, components, monkeypatch,
                                                                fresh_compiler_cache, children):
    done_at_call(monkeypatch, 3)  # steps 1 and 2 uncompiled, the compiled model from step 3
    before = cache_counters()
    result = hydranet.train(background_spec(faces, components), out_dir=tmp_path / "run", components=components,
                            progress=False, echo=False)
    after = cache_counters()
    log = (tmp_path / "run" / "train.log").read_text()
    assert "compiling the model in a background process (its log: compile.log)" in log
    assert "the compiled model takes over at epoch 1, step 3" in log
    assert log.index("takes over") < log.index("first compiled step done") < log.index("epoch 1/1")
    child_log = (tmp_path / "run" / "compile.log").read_text()
    assert "training graphs compiled" in child_log and "evaluation graph compiled" in child_log
    # Every graph the run compiled (training forward and backward, evaluation) came from the child's cache.
    assert after["miss"] == before["miss"], "the run's graphs differ from the child's"
    assert after["hit"] - before["hit"] >= 3
    assert any(fresh_compiler_cache.iterdir())
    assert result.timings["compiled_from"]["step"] == 3 and not result.timings["compiled_from"]["failed"]
    assert result.timings["compiled_from"]["first_step_seconds"] > 0
    assert [child.process.returncode for child in children] == [0]
    assert all(torch.isfinite(torch.tensor(v)) for k, v in result.history[-1].items() if k.startswith("train_loss."))


def test_a_failed_child_is_quoted_and_the_run_compiles_itself(faces, tmp_path, components, monkeypatch):
    monkeypatch.setattr(background_compile, "CHILD_COMMAND",
                        [sys.executable, "-c", "import sys; print('out of GPU memory'); sys.exit(3)"])
    done_at_call(monkeypatch, 1)
    result = hydranet.train(background_spec(faces, components), out_dir=tmp_path / "run", components=components,
                            progress=False, echo=False)
    log = (tmp_path / "run" / "train.log").read_text()
    assert "warning: the background compile failed (exit status 3: out of GPU memory); compiling here instead" in log
    assert result.timings["compiled_from"]["failed"] and result.settings.compile
    assert "epoch 1/1" in log


def test_a_run_that_ends_first_stops_the_child(faces, tmp_path, components, monkeypatch, children):
    monkeypatch.setattr(background_compile, "CHILD_COMMAND", [sys.executable, "-c", "import time; time.sleep(600)"])
    done_at_call(monkeypatch, None)
    result = hydranet.train(background_spec(faces, components), out_dir=tmp_path / "run", components=components,
                            progress=False, echo=False)
    log = (tmp_path / "run" / "train.log").read_text()
    assert "the run ended before the background compile did; it was stopped" in log
    assert "compiled_from" not in result.timings
    assert len(children) == 1 and children[0].process.poll() is not None  # not left running
    assert not Path(children[0]._folder.name).exists()  # the job file is gone too


def test_where_it_is_not_possible_the_run_says_why_and_compiles_first(faces, tmp_path, components, children):
    spec = background_spec(faces, components, deterministic=True)
    hydranet.train(spec, out_dir=tmp_path / "run", components=components, progress=False, echo=False)
    log = (tmp_path / "run" / "train.log").read_text()
    assert ("train.compile_in_background is not possible here (train.deterministic asks for runs that repeat "
            "bit for bit); the first step compiles instead") in log
    assert "the first step compiles the model" in log and not children


def test_blockers_name_each_reason():
    assert blockers(processes=1, graphs="compiler", deterministic=False) == []
    reasons = blockers(processes=2, graphs="step", deterministic=True)
    assert [r.split()[0] for r in reasons] == ["2", "train.cuda_graphs:", "train.deterministic"]


def test_without_compile_the_switch_does_nothing(faces, tmp_path, components, children):
    """compile_in_background only changes when a compile happens; with compile off there is none to move."""
    raw = tiny_spec(faces, epochs=1, compile=False, compile_in_background=True)
    result = hydranet.train(load_spec(raw, components=components), out_dir=tmp_path / "run", components=components,
                            progress=False, echo=False)
    assert not children and not result.settings.compile and "compiled_from" not in result.timings


def test_the_graph_cache_is_on_for_the_run_and_its_child(monkeypatch):
    # The switch works only through inductor's FX-graph cache, which torch 2.4 has but leaves off.
    import torch._inductor.config as inductor_config

    # Restored by hand: torch 2.4's config module cannot take monkeypatch's delete-then-set.
    before = inductor_config.fx_graph_cache
    try:
        monkeypatch.delenv("TORCHINDUCTOR_FX_GRAPH_CACHE", raising=False)
        inductor_config.fx_graph_cache = False
        background_compile.use_graph_cache()
        assert inductor_config.fx_graph_cache is True
        assert background_compile.os.environ["TORCHINDUCTOR_FX_GRAPH_CACHE"] == "1"  # what the child inherits
        monkeypatch.setenv("TORCHINDUCTOR_FX_GRAPH_CACHE", "0")  # a user's explicit choice is kept
        inductor_config.fx_graph_cache = False
        background_compile.use_graph_cache()
        assert inductor_config.fx_graph_cache is False
    finally:
        inductor_config.fx_graph_cache = before

