"""What a GenreWiz checkpoint folder holds, named once for every module that reads, fetches or ships one.

A checkpoint is a folder (local, in the Hub cache, or bundled in the package): the weights and
the config that rebuilds the model, the ONNX graph exported from those weights, and the
evaluation and card that back its numbers. Loading a model needs only :data:`MODEL_FILES`;
fetching or copying a whole checkpoint takes :data:`CHECKPOINT_FILES`.

This module imports nothing, so that any layer may use it.
"""

from __future__ import annotations

CONFIG_FILE = "config.json"
"""The model's constructor arguments, labels and :class:`~genrewiz.features.FeatureConfig`."""
WEIGHTS_FILE = "model.safetensors"
ONNX_FILE = "model.onnx"
"""The graph exported from :data:`WEIGHTS_FILE`; optional (serving falls back to torch without it)."""
METRICS_FILE = "metrics.json"
"""The measured accuracy that the app's trust sentence and ``/analyse`` quote; optional."""
CARD_FILE = "README.md"
"""The model card."""

MODEL_FILES = (CONFIG_FILE, WEIGHTS_FILE, ONNX_FILE)
"""What ``GenreClassifier.from_pretrained`` reads: enough to rebuild the model somewhere else (a Ray actor)."""
CHECKPOINT_FILES = (*MODEL_FILES, METRICS_FILE, CARD_FILE)
"""Everything a checkpoint folder holds: what is fetched from the Hub."""

MODEL_THREADS = 2
"""ONNX Runtime threads for a model loaded to serve: the CLI's, beside its decoding workers, and the
app's, per request. The pool does not spin, so a model-bound run gets the cores decoding leaves
idle and a decoding-bound one loses nothing; two requests at once share it at a small cost
(README, Speed, has the figures)."""
