"""Task options are checked in each task's constructor: the type of the
default (with the two conversions a command line needs) and the task's ranges."""

import math

import pytest

from eprop_lava.tasks import get_task


def test_integral_numbers_and_numeric_names_are_accepted():
    t = get_task("evidence", delay_ms=1050.0, n_cues=7.0, cue_hz=40)
    assert (t.delay_ms, t.n_cues) == (1050, 7) and isinstance(t.delay_ms, int)
    assert t.steps == 7 * (100 + 50) + 1050 + 150  # 2250, seed 001 sec. 5.3
    assert get_task("evidence", left_probabilities=[0.2, 0.8]).left_probabilities == (0.2, 0.8)
    assert get_task("pattern", input="poisson").input == "poisson"


@pytest.mark.parametrize("task,option,value,message", [
    ("evidence", "n_cues", 2.5, "expected an integer"),
    ("evidence", "n_cues", True, "expected an integer"),
    ("evidence", "n_cues", 0, "must be >= 1"),
    ("evidence", "cue_hz", math.nan, "expected a finite number"),
    ("evidence", "cue_hz", 2000.0, "spike probability"),
    ("evidence", "cue_ms", 0, "at least one step"),
    ("evidence", "left_probabilities", (0.5, 1.5), "probabilities in [0, 1]"),
    ("store_recall", "input_hz", math.inf, "expected a finite number"),
    ("teacher_student", "neuron", 3, "unknown value"),
])
def test_bad_options_name_the_task_and_option(task, option, value, message):
    with pytest.raises(ValueError) as err:
        get_task(task, **{option: value})
    assert message in str(err.value) and option in str(err.value)
