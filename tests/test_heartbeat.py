"""Progress lines where no bar is shown (a log file, nohup, SLURM): often enough to show life, never per step."""

from __future__ import annotations

from hydranet.core.heartbeat import Heartbeat


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_line_at_most_every_interval_with_position_time_left_and_losses():
    clock, lines = Clock(), []
    beat = Heartbeat(lines.append, every=60, clock=clock)
    beat.start_epoch(3, 20, total_steps=400, first_step=0)
    clock.now += 30
    beat.beat(50, {"age": 0.5})
    assert lines == []  # not a minute yet
    clock.now += 60  # 90 s for 100 steps: 300 left take 270 s
    beat.beat(100, {"age": 0.41234, "gender": 0.3})
    assert lines == ["epoch 3/20: step 100 of 400 (25%), 1m30s in, about 4m30s left; loss age 0.412, gender 0.300"]
    clock.now += 30
    beat.beat(130, {"age": 0.4})
    assert len(lines) == 1  # 30 s after the last line


def test_a_resumed_epoch_estimates_from_the_steps_it_trained_and_the_last_step_says_nothing():
    clock, lines = Clock(), []
    beat = Heartbeat(lines.append, every=10, clock=clock)
    beat.start_epoch(2, 2, total_steps=100, first_step=80)  # resumed at step 80
    clock.now += 3600 * 1.5
    beat.beat(90, {})
    assert lines == ["epoch 2/2: step 90 of 100 (90%), 1h30m in, about 1h30m left"]
    clock.now += 3600
    beat.beat(100, {"age": 1.0})  # the epoch's own line follows
    assert len(lines) == 1


def test_a_run_without_a_bar_writes_heartbeats_to_its_log_and_one_with_a_bar_does_not(faces, tmp_path, monkeypatch):
    import hydranet
    from conftest import tiny_spec
    from hydranet.core import heartbeat

    monkeypatch.setattr(heartbeat, "EVERY_SECONDS", 0.0)  # a line at every log interval
    spec = tiny_spec(faces, epochs=1, batch_size=16, log_every=4)  # 180 training images: 11 steps
    hydranet.train(spec, out_dir=tmp_path / "quiet", progress=False, echo=False)
    lines = [line for line in (tmp_path / "quiet" / "train.log").read_text().splitlines() if "step" in line]
    beats = [line for line in lines if line.startswith("epoch 1/1: step ")]
    assert [line.split(" of ")[0] for line in beats] == ["epoch 1/1: step 4", "epoch 1/1: step 8"], lines
    assert all(" of 11 (" in line and "left; loss age " in line for line in beats), beats
    hydranet.train(spec, out_dir=tmp_path / "bar", progress=True, echo=False)
    assert "epoch 1/1: step " not in (tmp_path / "bar" / "train.log").read_text()
