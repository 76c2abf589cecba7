"""`eprop-lava verify --lava` turns any Lava mismatch into a failing exit status."""

import sys
import types

import pytest

from eprop_lava import cli
from eprop_lava.engine import verify


def _fake_lava(monkeypatch, mismatches):
    section = {"case": {"mismatches": {"spikes": mismatches, "v": 0}}}
    report = {"lif_bitacc": section, "networks_fixed": section, "networks_float": section,
              "total_mismatches": 3 * mismatches, "ok": mismatches == 0, "wall_s": 0.0}
    module = types.ModuleType("eprop_lava.lava_checks")
    module.run_lava_checks = lambda quick=True: report
    module.count_mismatches = lambda sec: sum(sum(e["mismatches"].values()) for e in sec.values())
    monkeypatch.setitem(sys.modules, "eprop_lava.lava_checks", module)
    monkeypatch.setattr(verify, "run_checks", lambda: [])


@pytest.mark.parametrize("mismatches,status", [(0, 0), (2, 1)])
def test_verify_lava_exit_status(monkeypatch, capsys, mismatches, status):
    _fake_lava(monkeypatch, mismatches)
    assert cli.main(["verify", "--lava"]) == status
    out = capsys.readouterr().out
    assert f"lava total mismatches: {3 * mismatches}" in out
