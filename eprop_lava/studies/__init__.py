"""Parameter studies: quantization accuracy (``eprop-lava study quantization``)
and hyperparameter search (``eprop-lava tune``). See docs/studies.md."""
