"""The names LibMTL and torchjd users type for weightings: aliases of the same methods, a did-you-mean that says
what an alias stands for, and methods hydranet lacks named as such, not answered with another method's name."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from hydranet.core.cli import cli


def validate(weighting: str):
    return CliRunner().invoke(cli, ["spec", "validate", "specs/demo.yaml", "--set", f"weighting={weighting}"])


@pytest.mark.parametrize("typed, means", [("EW", "'ew' (an alias of sum)"), ("DWA", "'dwa'"),
                                          ("Nash_MTL", "'nash_mtl' (an alias of nashmtl)")])
def test_a_name_in_another_case_is_answered_with_the_registered_spelling(typed, means):
    result = validate(typed)
    assert result.exit_code != 0 and f"unknown weighting '{typed}'; did you mean {means}?" in result.output


@pytest.mark.parametrize("typed, method", [("gradvac", "GradVac (LibMTL, torchjd)"),
                                           ("GradDrop", "GradDrop (LibMTL, torchjd)"),
                                           ("Trimmed_Mean", "TrimmedMean (torchjd)")])
def test_a_method_hydranet_lacks_is_said_to_be_missing_not_mistaken_for_another(typed, method):
    result = validate(typed)
    assert (f"unknown weighting '{typed}'; {method} is not built into hydranet; a weighting plugin can add it (see "
            "docs/plugins/weighting.md), or use one of the known weightings: aligned,") in result.output
    assert "did you mean" not in result.output  # gradvac was 'upgrad', graddrop 'gradnorm'


def test_aliases_of_libmtl_names_validate():
    for alias in ("ew", "uw", "nash_mtl", "aligned_mtl", "db_mtl", "imtl_g"):
        assert validate(alias).exit_code == 0, alias


def test_the_weightings_table_lists_each_weighting_s_other_names():
    listing = CliRunner().invoke(cli, ["list", "weightings"])
    assert listing.exit_code == 0
    lines = listing.output.splitlines()
    sum_line = next(i for i, line in enumerate(lines) if line.strip().startswith("sum "))
    assert lines[sum_line + 2].strip() == "also named: ew, equal"


def test_a_method_a_plugin_adds_under_another_spelling_is_offered_not_said_to_be_missing(faces):
    """A plugin that registers GradVac as `grad_vac`: `gradvac` is answered with it, not 'not built into hydranet'."""
    from conftest import tiny_spec, with_weighting
    from hydranet.core.errors import SpecError
    from hydranet.core.spec import load_spec
    from hydranet.plugins.weighting.sum import Sum

    components = with_weighting("grad_vac", Sum, plugin="gradvac-plugin")
    with pytest.raises(SpecError) as caught:
        load_spec({**tiny_spec(faces, epochs=1), "weighting": "gradvac"}, components=components)
    assert "did you mean 'grad_vac'?" in str(caught.value)
    assert "not built into hydranet" not in str(caught.value)
