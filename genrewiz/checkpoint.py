"""What a GenreWiz checkpoint folder holds, named once for every module that reads, fetches or ships one.

A checkpoint is a folder (local, in the Hub cache, or bundled in the package): the weights and
the config that rebuilds the model, the ONNX graph exported from those weights, and the
evaluation and card that back its numbers. Loading a model needs only :data:`MODEL_FILES`;
fetching or copying a whole checkpoint takes :data:`CHECKPOINT_FILES`.

It also holds what ties ``model.onnx`` to the weights beside it: the metadata keys the export
writes and serving reads, and the weights' digest. This module imports only the standard
library, so that any layer may use it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

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

META_WEIGHTS = "genrewiz.weights_sha256"
"""ONNX metadata: the SHA-256 of the :data:`WEIGHTS_FILE` the graph was exported from (a stale graph is never served)."""
META_LABELS = "genrewiz.labels"
"""ONNX metadata: the labels, in output order, as JSON."""
META_FEATURES = "genrewiz.features"
"""ONNX metadata: the :class:`~genrewiz.features.FeatureConfig`, as JSON."""
META_AUDIOSET_FEATURES = "genrewiz.audioset_features"
"""ONNX metadata of a graph with the AudioSet ear: its :class:`~genrewiz.features.AudioSetFeatures`, as JSON."""
META_PATCH_FRAMES = "genrewiz.patch_frames"
"""ONNX metadata of a two-stage musicnn graph: frames per patch."""
META_QUANTIZATION = "genrewiz.quantization"
"""ONNX metadata of a quantised graph: JSON saying which operators are int8, how, and calibrated on what."""


def weights_digest(path: str | Path) -> str:
    """SHA-256 of a weights file: what ties an ONNX graph to the weights it was exported from."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
