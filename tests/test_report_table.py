"""The closing table's "beats baseline" column: a win by direction, and float noise counted as a tie."""

from __future__ import annotations

from hydranet.core.report import metrics_table


def beats(value: float, base: float, higher: bool) -> str:
    table = metrics_table({"t": {"m": value}}, {"t": {"m": base}}, {"t": {"m": higher}})
    return table.splitlines()[-1].split()[-1]


def test_beating_the_baseline_follows_the_metric_s_direction():
    assert beats(6.5, 14.3, higher=False) == "yes" and beats(14.4, 14.3, higher=False) == "no"
    assert beats(0.97, 0.54, higher=True) == "yes" and beats(0.5, 0.54, higher=True) == "no"


def test_a_difference_of_float_noise_is_a_tie_not_a_win():
    """An MAE of 16.374998 against the constant's 16.375 said 'yes'."""
    assert beats(16.374998, 16.375, higher=False) == "no"
    assert beats(0.8800001, 0.88, higher=True) == "no"
    assert beats(16.37, 16.375, higher=False) == "yes"
