"""Speech tasks: batches, masks, targets and metrics on the offline corpus and a TIMIT fixture."""

import numpy as np
import pytest

pytest.importorskip("librosa")

from eprop_lava.engine.network import Batch  # noqa: E402
from eprop_lava.spec import NetworkSpec  # noqa: E402
from eprop_lava.tasks.speech import espeak  # noqa: E402
from eprop_lava.tasks.speech.fixtures import make_timit_fixture  # noqa: E402
from eprop_lava.tasks.speech.phones import TIMIT39, TIMIT61  # noqa: E402
from eprop_lava.tasks.speech.tasks import (  # noqa: E402
    KeywordClassification, PhoneClassification, SpeechTaskError,
)


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    if not espeak.available():
        pytest.skip("espeakng-loader is not installed (pip install espeakng-loader)")
    from eprop_lava.tasks.speech.corpus import CorpusOptions, build_corpus

    return build_corpus(tmp_path_factory.mktemp("speech") / "c", CorpusOptions.small()).root


@pytest.fixture(scope="module")
def timit_dir(tmp_path_factory):
    return make_timit_fixture(tmp_path_factory.mktemp("timit"))


def _check_batch(b: Batch, B: int, K: int):
    T = b.steps
    assert b.x.shape == (T, B, 39) and b.target.shape == (T, B, K) and b.mask.shape == (T, B)
    np.testing.assert_allclose(b.mask.sum(0), 1.0)                   # each utterance weighs 1
    on = b.mask > 0
    np.testing.assert_array_equal(b.target.sum(-1)[on], 1.0)         # one-hot where counted
    assert np.all(b.x[~on.any(1)] == 0) or on.any(1).all()           # padding is zero input
    # the stretch: every frame lasts 5 steps
    first = np.argmax(b.target[:, 0], -1)[: 5 * (on[:, 0].sum() // 5)]
    assert np.all(first.reshape(-1, 5) == first.reshape(-1, 5)[:, :1])


def test_phone_task_on_corpus(corpus_dir):
    task = PhoneClassification(corpus_dir, split="train")
    b = task.batch(np.random.default_rng(5), 4)
    _check_batch(b, 4, 39)
    assert b.labels is None
    again = PhoneClassification(corpus_dir, split="train").batch(np.random.default_rng(5), 4)
    np.testing.assert_array_equal(b.x, again.x)                      # a seed fixes the batch
    assert task.metric(10 * b.target, b) == 0.0
    wrong = np.roll(b.target, 1, axis=-1)
    assert task.metric(wrong, b) == 1.0
    # features are normalised per utterance before the stretch
    u = task.prepared()[0]
    np.testing.assert_allclose(u.x.mean(0), 0, atol=1e-5)
    assert u.x.shape[1] == 39 and u.phones.max() < 39
    sil = TIMIT39.index("sil")
    assert all(p.phones[-1] != sil for p in task.prepared())         # trailing silence trimmed
    # whole-split evaluation with an oracle is exact
    test = PhoneClassification(corpus_dir, split="test", kinds=("digit",))
    assert len(test.utterances()) == 2 * 2 * 10
    phones = np.concatenate([p.phones for p in test.prepared()])
    expected = 1 - np.sum(phones == 0) / np.sum(phones >= 0)        # always class 0 ("aa"), frame-weighted
    assert test.evaluate(lambda x: np.zeros(x.shape[:2] + (39,)), batch_size=7) == pytest.approx(expected)
    spec = task.default_spec()
    assert isinstance(spec, NetworkSpec) and spec.n_inputs == 39 and spec.readout.n_outputs == 39
    with pytest.raises(SpeechTaskError, match="39-phone set"):
        PhoneClassification(corpus_dir, phones="61").batch(np.random.default_rng(0), 1)


def test_keyword_task_on_corpus(corpus_dir):
    task = KeywordClassification(corpus_dir, split="valid")
    assert len(task.utterances()) == 2 * 10                          # 2 accents x 1 variant x 10 digits
    b = task.batch(np.random.default_rng(1), 8)
    _check_batch(b, 8, 10)
    assert b.labels.shape == (8,) and set(b.labels) <= set(range(10))
    np.testing.assert_array_equal(np.argmax(b.target[0], -1), b.labels)
    assert task.metric(b.target, b) == 0.0
    y = np.zeros_like(b.target)
    y[..., 3] = 1.0
    assert task.metric(y, b) == pytest.approx(np.mean(b.labels != 3))
    assert task.default_spec().readout.n_outputs == 10
    full = task.evaluate(lambda x: np.zeros(x.shape[:2] + (10,)) + np.eye(10)[0], batch_size=7)
    assert full == pytest.approx(0.9)                                 # always "zero": 18 of 20 wrong


def test_phone_task_on_timit_fixture(timit_dir, tmp_path):
    t61 = PhoneClassification(timit_dir, phones="61", require_complete=False)
    b = t61.batch(np.random.default_rng(0), 3)
    _check_batch(b, 3, 61)
    t39 = PhoneClassification(timit_dir, phones="39", require_complete=False, cache_dir=tmp_path)
    b39 = t39.batch(np.random.default_rng(0), 3)
    _check_batch(b39, 3, 39)
    np.testing.assert_array_equal(b.x, b39.x)                         # same utterances, same features
    # q frames carry no target in the 39 set, but do in the 61 set
    for u61, u39 in zip(t61.prepared(), t39.prepared()):
        q = u61.phones == TIMIT61.index("q")
        assert np.all(u39.phones[q] == -1)
        assert np.all(u39.phones[~q] >= 0)
    assert len(t39.prepared("test")) == 6 and len(list(tmp_path.glob("speech-train-*.npz"))) == 1
    cached = PhoneClassification(timit_dir, phones="39", require_complete=False, cache_dir=tmp_path)
    np.testing.assert_array_equal(cached.prepared()[2].x, t39.prepared()[2].x)
    with pytest.raises(SpeechTaskError, match="TIMIT has no isolated digits"):
        KeywordClassification(timit_dir, require_complete=False).prepared()


def test_task_options_validate(timit_dir):
    with pytest.raises(SpeechTaskError, match="split: unknown split 'dev'"):
        PhoneClassification(timit_dir, split="dev")
    with pytest.raises(SpeechTaskError, match="PhoneClassification.phones"):
        PhoneClassification(timit_dir, phones="48")
    with pytest.raises(SpeechTaskError, match="batch_size"):
        PhoneClassification(timit_dir, require_complete=False).batch(np.random.default_rng(0), 0)
