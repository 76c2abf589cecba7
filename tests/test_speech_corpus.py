"""The offline eSpeak NG corpus: build, alignment, split by voice, checksums."""

import json

import numpy as np
import pytest

from eprop_lava.tasks.speech import espeak
from eprop_lava.tasks.speech.corpus import (
    CorpusError, CorpusOptions, build_corpus, load_corpus,
)
from eprop_lava.tasks.speech.phones import espeak_to_39, normalize_espeak

needs_espeak = pytest.mark.skipif(not espeak.available(),
                                  reason="espeakng-loader is not installed (pip install espeakng-loader)")


def test_espeak_mapping_handles_152_stress_and_variants():
    assert normalize_espeak("'E") == "E" and normalize_espeak(",aU") == "aU"
    assert espeak_to_39("'i@") == "iy" and espeak_to_39("'0") == "aa" and espeak_to_39("t#") == "dx"
    assert espeak_to_39("aI2") == "ay"  # unknown numbered variant falls back to its base
    assert espeak_to_39("?") is None and espeak_to_39("_:") == "sil"
    with pytest.raises(KeyError, match="no entry"):
        espeak_to_39("@@@")


def test_options_validate():
    with pytest.raises(CorpusError, match=r"CorpusOptions.test_variants: \['zz'\] not in variants"):
        CorpusOptions(test_variants=("zz",))
    with pytest.raises(CorpusError, match="CorpusOptions.rate"):
        CorpusOptions(rate=(50, 100))
    with pytest.raises(CorpusError, match="CorpusOptions.valid_variants: overlaps"):
        CorpusOptions(valid_variants=("m3",))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    if not espeak.available():
        pytest.skip("espeakng-loader is not installed (pip install espeakng-loader)")
    return build_corpus(tmp_path_factory.mktemp("speech") / "corpus", CorpusOptions.small())


def _rms(x):
    return float(np.sqrt(np.mean((x / 32768.0) ** 2))) if x.size else 0.0


def _zcr(x):
    return float(np.mean(np.abs(np.diff(np.sign(x))) > 0))


@needs_espeak
def test_small_corpus_layout_and_split_by_voice(corpus):
    m = corpus.manifest
    # 2 accents x 5 variants x (10 digits + 3 words + 1 sentence)
    assert m["n_utterances"] == 140 and len(corpus.utterances) == 140
    train, valid, test = (corpus.split(s) for s in ("train", "valid", "test"))
    assert (len(train), len(valid), len(test)) == (56, 28, 56)
    assert {u.variant for u in test} == {"m3", "f2"} and {u.variant for u in valid} == {"m6"}
    assert not {u.variant for u in train} & {"m3", "f2", "m6"}
    assert {u.accent for u in test} == {"en-us", "en"}
    digits = [u for u in corpus.utterances if u.kind == "digit"]
    assert sorted({u.label for u in digits}) == list(range(10))
    assert m["unmapped_phonemes"] == {}
    assert 60 < m["seconds"] < 400


@needs_espeak
def test_alignment_matches_the_audio(corpus):
    sil_rms, speech_rms, s_zcr, v_zcr = [], [], [], []
    for u in corpus.utterances:
        x, sr, segs = u.load()
        assert sr == 16000 and x.dtype == np.int16
        # contiguous cover of the whole waveform, silence at both ends
        assert segs[0][0] == 0 and segs[-1][1] == x.size
        assert all(a[1] == b[0] for a, b in zip(segs, segs[1:]))
        assert segs[0][2] == "sil" and segs[-1][2] == "sil"
        for a, b, p in segs:
            if b - a < 320:
                continue
            seg = x[a:b].astype(np.float64)
            if p == "sil":
                sil_rms.append(_rms(seg[80:-80]))
            elif p in ("aa", "ae", "ah", "eh", "ih", "iy", "uw", "ow", "ey", "ay"):
                speech_rms.append(_rms(seg))
                v_zcr.append(_zcr(seg))
            elif p == "s":
                s_zcr.append(_zcr(seg))
        words = [line.split() for line in u.root.joinpath(u.id + ".wrd").read_text().splitlines()]
        starts = {a for a, _, _ in segs}
        assert words and all(int(w[0]) in starts for w in words)
    # pauses are near the noise floor, vowels loud; /s/ is noisy, vowels periodic
    assert np.median(sil_rms) < 0.02 * np.median(speech_rms)
    assert np.median(s_zcr) > 3 * np.median(v_zcr)
    assert len(s_zcr) >= 10 and len(v_zcr) >= 100


@needs_espeak
def test_resynthesis_timings_agree_within_tolerance():
    e = espeak.ESpeak.instance()
    a = e.synthesize("seven three", "en-us+m1", 150, 50, 50)
    b = e.synthesize("seven three", "en-us+m1", 150, 50, 50)
    assert [p for _, p in a.phonemes] == [p for _, p in b.phonemes]
    onsets_a, onsets_b = np.array([s for s, _ in a.phonemes]), np.array([s for s, _ in b.phonemes])
    # onsets after the first word jitter (seen: up to 16 samples, 0.7 ms); frames are 10 ms
    assert np.max(np.abs(onsets_a - onsets_b)) <= 0.002 * a.sample_rate
    assert abs(a.samples.size - b.samples.size) <= 0.01 * a.samples.size
    with pytest.raises(espeak.ESpeakError, match="no voice 'en-gb\\+m7'"):
        e.synthesize("one", "en-gb+m7")


@needs_espeak
def test_checksums_and_reuse(corpus, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(corpus.root, root)
    manifest = (root / "manifest.json").read_text()
    again = build_corpus(root, CorpusOptions.small())          # same options: reused, not rebuilt
    assert (root / "manifest.json").read_text() == manifest and len(again.utterances) == 140
    with pytest.raises(CorpusError, match="other options"):
        build_corpus(root, CorpusOptions.small(seed=1))
    u = again.split("test")[3]
    phn = root / f"{u.id}.phn"
    phn.write_text(phn.read_text().replace(" sil\n", " sh\n", 1))
    with pytest.raises(CorpusError, match=f"{u.id}.phn: checksum differs from manifest.json"):
        load_corpus(root)
    assert len(load_corpus(root, verify=False).utterances) == 140
    (root / f"{u.id}.wav").unlink()
    with pytest.raises(CorpusError, match=f"{u.id}.wav: listed in the manifest but missing"):
        load_corpus(root, verify=False)
    with pytest.raises(CorpusError, match="not a built speech corpus"):
        load_corpus(tmp_path)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.txt").write_text("x")
    with pytest.raises(CorpusError, match="refusing to write there"):
        build_corpus(tmp_path / "junk", CorpusOptions.small())


@needs_espeak
def test_cli_builds_then_reuses(tmp_path, capsys):
    from eprop_lava.cli import main

    opts = ["data", "speech", "--out", str(tmp_path / "c"), "--small", "--quiet",
            "--accents", "en-us", "--variants", "m1,f1,m3,f2,m6", "--sentences", "0"]
    assert main(opts) == 0
    out = capsys.readouterr().out
    assert "65 utterances" in out and "train/valid/test 26/13/26" in out
    stamp = (tmp_path / "c" / "manifest.json").stat().st_mtime_ns
    assert main(opts) == 0 and (tmp_path / "c" / "manifest.json").stat().st_mtime_ns == stamp
    m = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert m["options"]["accents"] == ["en-us"] and m["options"]["sentences_per_speaker"] == 0
