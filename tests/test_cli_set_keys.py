"""A misspelt --set key: one line naming the key as typed and the closest
valid key, exit status 2; the suggested key is itself accepted."""

import dataclasses
import difflib

import pytest

from eprop_lava.cli import main
from eprop_lava.spec import LayerSpec, NetworkSpec, NeuronParams, OptimizerSpec
from eprop_lava.training import TrainConfig


def _closest(word, cls):
    """The closest field name by difflib, from the dataclass itself (not the CLI's tables)."""
    return difflib.get_close_matches(word, [f.name for f in dataclasses.fields(cls)], n=1, cutoff=0.6)[0]


@pytest.mark.parametrize("typed, prefix, word, cls, rest", [
    ("spec.layrs", "spec.", "layrs", NetworkSpec, ""),
    ("spec.layrs.0.size", "spec.", "layrs", NetworkSpec, ".0.size"),
    ("spec.optimizer.lrr", "spec.optimizer.", "lrr", OptimizerSpec, ""),
    ("spec.layers.0.sizee", "spec.layers.0.", "sizee", LayerSpec, ""),
    ("spec.layers.0.params.tau_mm", "spec.layers.0.params.", "tau_mm", NeuronParams, ""),
    ("train.iteratons", "train.", "iteratons", TrainConfig, ""),
])
def test_misspelt_key_names_the_typed_key_and_the_closest_valid_one(typed, prefix, word, cls, rest, capsys):
    assert main(["config", "show", "evidence", "--set", f"{typed}=3"]) == 2
    err = capsys.readouterr().err.strip()
    suggestion = prefix + _closest(word, cls) + rest
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"--set {typed}:" in err
    assert f"did you mean {suggestion!r}?" in err
    # the suggestion is a key the command accepts, and the value lands there (values valid for each field)
    value, line = {"spec.layers": ('[{"size": 20}]', "size = 20"), "spec.layers.0.size": ("20", "size = 20"),
                   "spec.optimizer.lr": ("0.0123", "lr = 0.0123"),
                   "spec.layers.0.params.tau_m": ("25.5", "tau_m = 25.5"),
                   "train.iterations": ("37", "iterations = 37")}[suggestion]
    assert main(["config", "show", "evidence", "--set", f"{suggestion}={value}"]) == 0
    assert line in capsys.readouterr().out.splitlines()


def test_key_without_close_match_lists_the_valid_keys(capsys):
    assert main(["config", "show", "evidence", "--set", "spec.xyz=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--set spec.xyz:" in err and "did you mean" not in err
    for f in dataclasses.fields(NetworkSpec):
        assert f.name in err


def test_list_needs_an_index(capsys):
    for typed in ("spec.layers.size", "spec.layers.x.size"):   # index left out; a wrong index
        assert main(["config", "show", "evidence", "--set", f"{typed}=3"]) == 2
        err = capsys.readouterr().err
        assert f"--set {typed}: spec.layers is a list" in err and "(e.g. spec.layers.0.size)" in err


def test_free_form_task_options_are_not_checked_by_field(capsys):
    assert main(["config", "show", "evidence", "--set", "train.task_options.n_cues=3"]) == 0
    assert "n_cues = 3" in capsys.readouterr().out
