"""TIMIT reader on a generated TIMIT-layout fixture (real SPHERE headers)."""

import numpy as np
import pytest

from eprop_lava.tasks.speech.fixtures import make_timit_fixture
from eprop_lava.tasks.speech.phones import (
    CORE_TEST_SPEAKERS, DEV_SPEAKERS, FOLD_61_TO_39, TIMIT39, TIMIT61, fold,
)
from eprop_lava.tasks.speech.timit import (
    TimitCorpus, TimitError, parse_sphere_header, read_segments, read_sphere, write_sphere,
)


@pytest.fixture()
def timit(tmp_path):
    return make_timit_fixture(tmp_path / "corpus" / "TIMIT")


def test_phone_sets_and_speaker_lists():
    assert len(TIMIT61) == 61 and len(set(TIMIT61)) == 61
    assert len(TIMIT39) == 39
    assert FOLD_61_TO_39["ao"] == "aa" and FOLD_61_TO_39["ux"] == "uw" and FOLD_61_TO_39["zh"] == "sh"
    assert FOLD_61_TO_39["q"] is None and fold("H#") == "sil" and fold("epi") == "sil"
    assert sorted({FOLD_61_TO_39[p] for p in ("pcl", "tcl", "kcl", "bcl", "dcl", "gcl", "pau")}) == ["sil"]
    core = [s for g in CORE_TEST_SPEAKERS.values() for s in g]
    assert len(core) == 24 and len(set(core)) == 24
    assert all(sum(s[0] == "m" for s in g) == 2 for g in CORE_TEST_SPEAKERS.values())  # 2 male + 1 female
    assert len(set(DEV_SPEAKERS)) == 50 and not set(DEV_SPEAKERS) & set(core)


def test_sphere_round_trip_and_header(tmp_path):
    x = (np.arange(-500, 500) * 30).astype(np.int16)
    p = tmp_path / "a.wav"
    write_sphere(p, x, 16000)
    raw = p.read_bytes()
    assert raw[:8] == b"NIST_1A\n" and len(raw) == 1024 + 2 * x.size
    h = parse_sphere_header(raw, p)
    assert h["sample_count"] == 1000 and h["sample_rate"] == 16000 and h["sample_byte_format"] == "01"
    y, sr, _ = read_sphere(p)
    assert sr == 16000 and y.dtype == np.int16 and np.array_equal(x, y)
    # big-endian variant
    big = raw[:1024].replace(b"sample_byte_format -s2 01", b"sample_byte_format -s2 10") + x.astype(">i2").tobytes()
    p.write_bytes(big)
    assert np.array_equal(read_sphere(p)[0], x)


def test_shorten_and_truncated_files_are_named(tmp_path):
    x = np.zeros(100, np.int16)
    p = tmp_path / "SI1.WAV"
    write_sphere(p, x, 16000, sample_coding="pcm,embedded-shorten-v1.09")
    with pytest.raises(TimitError, match=r"SI1\.WAV.*shorten.*sph2pipe"):
        read_sphere(p)
    write_sphere(p, x, 16000)
    p.write_bytes(p.read_bytes()[:1024 + 50])
    with pytest.raises(TimitError, match=r"SI1\.WAV: truncated audio \(25 of 100"):
        read_sphere(p)
    p.write_bytes(b"RIFX not a sphere file")
    with pytest.raises(TimitError, match="SI1.WAV: not a NIST SPHERE"):
        read_sphere(p)


def test_scan_splits_and_case_insensitivity(timit):
    c = TimitCorpus(timit.parent, require_complete=False)  # root found one level down
    assert len(c.utterances) == 7 * 4
    train, valid, test = c.split("train"), c.split("valid"), c.split("test")
    assert len(train) == 3 * 3 and all(u.kind != "sa" for u in train)
    assert {u.speaker for u in test} == {"mdab0", "mtas1"} and len(test) == 6
    assert {u.speaker for u in valid} == {"faks0"}
    u = test[0]
    assert u.id == "test/dr1/mdab0/si1001" and u.wav.name == "si1001.wav"
    samples, sr, segs = u.load()
    assert sr == 16000 and segs[0][2] == "h#" and segs[-1][1] == samples.size
    rnd = TimitCorpus(timit, require_complete=False, validation="random").split("valid")
    assert {u.speaker for u in rnd} == {"faks0", "mwsb0"} and len(rnd) == 6  # all 6 non-core TEST SI/SX


def test_incomplete_corpus_is_reported(timit):
    with pytest.raises(TimitError, match=r"incomplete TIMIT corpus: core test speakers missing from TEST: "
                                          r"fdhc0, felc0.*train has 9 SI/SX sentences, expected 3696"):
        TimitCorpus(timit)


def test_bad_files_are_named(timit):
    phn = timit / "TRAIN" / "DR1" / "FCJF0" / "SX101.PHN"
    lines = phn.read_text().splitlines()
    phn.write_text("\n".join(lines[:2] + ["100 50 s"] + lines[3:]) + "\n")
    with pytest.raises(TimitError, match=r"SX101\.PHN:3: empty or negative segment 100\.\.50"):
        read_segments(phn, TIMIT61)
    phn.write_text("0 100 h#\n100 200 xx\n")
    with pytest.raises(TimitError, match=r"SX101\.PHN:2: unknown phone 'xx'"):
        read_segments(phn, TIMIT61)
    phn.write_text("0 100 h#\n100 999999 s\n")
    utt = next(u for u in TimitCorpus(timit, require_complete=False).utterances if u.phn == phn)
    with pytest.raises(TimitError, match=r"SX101\.PHN: last segment ends at sample 999999"):
        utt.load()
    phn.unlink()
    with pytest.raises(TimitError, match=r"SX101\.WAV: no matching SX101\.PHN"):
        TimitCorpus(timit, require_complete=False)


def test_missing_root_is_named(tmp_path):
    with pytest.raises(TimitError, match="no TRAIN and TEST folders"):
        TimitCorpus(tmp_path)
