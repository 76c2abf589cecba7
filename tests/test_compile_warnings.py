"""compile warns when a matrix quantizes to mostly zero or with a large
relative error (the artifact is still written: a warning, not an error)."""

import io

import numpy as np

from eprop_lava.cli import main
from test_compile_artifact import make_checkpoint, small_spec


def _scaled_checkpoint(tmp_path, scale_one_weight: float):
    ck = make_checkpoint(tmp_path, small_spec("lif"))
    with np.load(ck) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["param/layers.0.w_in"][0, 0] *= scale_one_weight
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    out = tmp_path / "scaled.npz"
    out.write_bytes(buf.getvalue())
    return ck, out


def test_one_huge_weight_leaves_the_rest_of_its_group_at_zero(tmp_path, capsys):
    """One w_in entry times 1e30 sets the scale of the layer's group (w_in and
    w_rec share it): every other weight is ~1e-30 steps, so 639 of the 640
    non-zero w_in entries (16 x 40) and all 240 off-diagonal w_rec entries
    (16 x 15) round to 0."""
    ck, scaled = _scaled_checkpoint(tmp_path, 1e30)
    assert main(["compile", str(scaled), "--out", str(tmp_path / "art")]) == 0
    err = capsys.readouterr().err.splitlines()
    warnings = [line for line in err if line.startswith("eprop-lava: warning:")]
    assert len(warnings) == 2, err
    assert "layers.0.w_in: 99.8% of its non-zero weights quantize to 0" in warnings[0]  # 639/640
    assert "layers.0.w_rec: 100.0% of its non-zero weights quantize to 0" in warnings[1]
    assert (tmp_path / "art" / "manifest.json").is_file()
    # the unscaled checkpoint compiles without a warning
    assert main(["compile", str(ck), "--out", str(tmp_path / "art_ok")]) == 0
    assert "warning" not in capsys.readouterr().err


def test_three_bit_weights_flag_the_matrix_that_is_mostly_zero(tmp_path):
    """At 3 bits (max-abs scaling) the flagged matrices are those whose error
    computed here from the dequantized weights, ||w - q/scale|| / ||w||, is
    above 0.5, or whose non-zero weights are mostly integer 0."""
    from eprop_lava.compile.quantize import REL_ERROR_WARNING, ZERO_FRACTION_WARNING, dequantize, \
        quantization_warnings, quantize_network
    from eprop_lava.training import load_checkpoint

    ck = load_checkpoint(make_checkpoint(tmp_path, small_spec("lif")))
    net, report = quantize_network(ck.spec, ck.params, 3, search=False)
    deq = dequantize(net)
    expected = set()
    for name in ("layers.0.w_in", "layers.0.w_rec", "readout.w"):
        w = ck.params[name]
        rel = np.linalg.norm(w - deq[name]) / np.linalg.norm(w)
        zero = np.mean(deq[name][w != 0] == 0)
        if rel > REL_ERROR_WARNING or zero > ZERO_FRACTION_WARNING:
            expected.add(name)
    flagged = {line.split(":")[0] for line in quantization_warnings(report, net, ck.params)}
    assert flagged == expected
    assert 0 < len(expected) < 3  # some matrices pass, some do not: the threshold discriminates
