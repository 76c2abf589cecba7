"""Speech data for e-prop: MFCC features (seed 002 sec. 3.1.3), a TIMIT reader
(sec. 3.1.1-3.1.2), an offline eSpeak NG corpus, and speech tasks.

Importing this package does not import librosa; feature extraction does.
"""

from eprop_lava.tasks.speech.features import FeatureError, FeatureOptions

__all__ = ["FeatureError", "FeatureOptions"]
