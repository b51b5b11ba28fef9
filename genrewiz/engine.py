"""Inference engines: the same window probabilities from PyTorch or from ONNX Runtime.

A checkpoint folder may hold ``model.onnx`` next to ``model.safetensors``
(:meth:`genrewiz.model.PCRNN.save_pretrained` writes both). The ONNX graph is 8-12x faster
on one CPU thread than torch eager, and ``onnxruntime`` imports in a tenth of the time torch
does, so :class:`OnnxEngine` serves whenever the graph matches the weights beside it. The graph
carries the SHA-256 of the ``model.safetensors`` it was exported from, plus the labels and the
:class:`~genrewiz.features.FeatureConfig`, so it is self-describing and a stale graph is never
used. :class:`TorchEngine` runs the PCRNN itself: the fallback, and what training uses (it also
accepts a cached CNN-branch output).

This module imports neither torch nor onnx at import time; each is imported where it is needed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .features import FeatureConfig

if TYPE_CHECKING:
    from .model import PCRNN

logger = logging.getLogger("genrewiz")

ONNX_FILE = "model.onnx"
WEIGHTS_FILE = "model.safetensors"
OPSET = 17
_META_WEIGHTS = "genrewiz.weights_sha256"
_META_LABELS = "genrewiz.labels"
_META_FEATURES = "genrewiz.features"
_META_PATCH_FRAMES = "genrewiz.patch_frames"
_PATCH_INPUTS = ("x", "patches", "index")


def weights_digest(path: str | Path) -> str:
    """SHA-256 of a weights file: what ties an ONNX graph to the weights it was exported from."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def distinct_patches(windows: np.ndarray, patch_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Each distinct patch of ``(n, 1, frames, mels)`` windows once, and where each window's patches are.

    Returns ``(patches, index)``: ``(p, patch_frames, mels)`` and ``(n, frames // patch_frames)``
    with ``patches[index[w, k]]`` equal to patch ``k`` of window ``w``. Windows overlap by half
    and the musicnn branch's hop is a whole number of patches, so consecutive windows share
    patches: the pretrained trunk (nearly all of the musicnn PCRNN's work) then runs about half
    as often on a long song, with the same result.
    """
    n, _, _, mels = windows.shape
    per_window = windows.shape[2] // patch_frames
    cut = windows[:, 0, : per_window * patch_frames].reshape(n * per_window, patch_frames, mels)
    first: dict[bytes, int] = {}
    index = np.array([first.setdefault(patch.tobytes(), len(first)) for patch in cut], dtype=np.int64)
    keep = np.unique(index, return_index=True)[1]
    return np.ascontiguousarray(cut[keep]), index.reshape(n, per_window)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float32, stable for large logits."""
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32)


class TorchEngine:
    """The PCRNN in PyTorch, on whatever device it is on (training validates on the GPU this way)."""

    name = "torch"

    def __init__(self, model: PCRNN, batch_size: int = 16) -> None:
        self.model = model
        self.batch_size = batch_size

    def window_probabilities(self, windows: np.ndarray, cnn_features: np.ndarray | None = None) -> np.ndarray:
        """Softmax probabilities ``(n, n_labels)`` for ``(n, 1, frames, n_mels)`` windows, in batches.

        ``cnn_features`` is the CNN branch's output for those windows when already known (a frozen
        pretrained branch's, cached by training); only the rest of the model then runs.
        """
        import torch

        device = next(self.model.parameters()).device
        batches = []
        with torch.inference_mode():
            for i in range(0, len(windows), self.batch_size):
                x = torch.from_numpy(windows[i : i + self.batch_size]).to(device)
                if cnn_features is None:
                    logits = self.model(x)
                else:
                    logits = self.model.head(torch.from_numpy(cnn_features[i : i + self.batch_size]).to(device), x)
                batches.append(torch.softmax(logits, dim=1).cpu())
        return torch.cat(batches).numpy()


class OnnxEngine:
    """An exported PCRNN run by ONNX Runtime on the CPU.

    ``num_threads`` is ONNX Runtime's intra-op thread count per call (``None``: its default, one
    per core). One is right for GenreWiz's callers, which already run work side by side: the app
    serves two requests at once (``run`` is thread-safe, each call uses its own thread) and the
    CLI decodes in worker processes on the other cores. Threads do not spin while idle, so a
    busy, shared machine does not lose a core to waiting.
    """

    name = "onnxruntime"

    def __init__(self, path: str | Path, num_threads: int | None = 1, batch_size: int = 16) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if num_threads is not None:
            options.intra_op_num_threads = num_threads
            options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # warnings about unused initializers etc. are not the user's business
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.batch_size = batch_size
        meta = self.session.get_modelmeta().custom_metadata_map
        self.weights_sha256 = meta.get(_META_WEIGHTS)
        self.labels: tuple[str, ...] = tuple(json.loads(meta[_META_LABELS])) if _META_LABELS in meta else ()
        self.config = FeatureConfig.from_dict(json.loads(meta[_META_FEATURES])) if _META_FEATURES in meta else None
        self._inputs = tuple(i.name for i in self.session.get_inputs())
        self.patch_frames = int(meta[_META_PATCH_FRAMES]) if self._inputs == _PATCH_INPUTS else None

    @classmethod
    def for_checkpoint(cls, directory: str | Path, num_threads: int | None = 1, batch_size: int = 16) -> OnnxEngine | None:
        """The engine for a checkpoint folder's ``model.onnx``, or ``None`` to use torch instead.

        ``None`` when the folder has no graph, or one whose recorded weights hash, labels or
        features are missing or differ from ``model.safetensors`` (a log line says why).
        """
        directory = Path(directory)
        onnx_path, weights = directory / ONNX_FILE, directory / WEIGHTS_FILE
        if not onnx_path.is_file() or not weights.is_file():
            return None
        try:
            engine = cls(onnx_path, num_threads, batch_size)
        except Exception as err:  # onnxruntime raises its own exception types for unreadable graphs
            logger.warning("Could not load %s (%s); running the model in PyTorch.", onnx_path, err)
            return None
        if engine.weights_sha256 != weights_digest(weights) or engine.config is None or not engine.labels:
            logger.warning("%s was not exported from the %s beside it; running the model in PyTorch.", onnx_path, WEIGHTS_FILE)
            return None
        return engine

    def window_probabilities(self, windows: np.ndarray, cnn_features: np.ndarray | None = None) -> np.ndarray:
        """Softmax probabilities ``(n, n_labels)`` for ``(n, 1, frames, n_mels)`` windows, in batches."""
        if cnn_features is not None:
            raise ValueError("the ONNX graph runs the whole model; a known CNN-branch output needs TorchEngine")
        batches = []
        for i in range(0, len(windows), self.batch_size):
            x = np.ascontiguousarray(windows[i : i + self.batch_size], dtype=np.float32)
            if self.patch_frames is None:
                feeds = {self._inputs[0]: x}
            else:
                patches, index = distinct_patches(x, self.patch_frames)
                feeds = {"x": x, "patches": patches, "index": index}
            batches.append(self.session.run(None, feeds)[0])
        return softmax(np.concatenate(batches))


def export_onnx(model: PCRNN, path: str | Path, weights_sha256: str) -> None:
    """Write ``model`` (in eval mode, on the CPU) as an ONNX graph with dynamic batch axes.

    A from-scratch PCRNN maps windows ``x`` to logits. A musicnn PCRNN takes its windows'
    :func:`distinct_patches` too (inputs ``x``, ``patches``, ``index``), so that the trunk runs
    once per distinct patch. Needs the ``onnx`` package (``torch.onnx.export`` uses it, and it
    writes the metadata): a training-time dependency, never a serving one. ``model`` is left
    as it was.
    """
    import copy
    import warnings

    import onnx
    import torch

    frozen = copy.deepcopy(model).cpu().eval()
    x = torch.zeros(2, 1, model.features.window_frames, model.features.n_mels)
    metadata = {
        _META_WEIGHTS: weights_sha256,
        _META_LABELS: json.dumps(list(model.labels)),
        _META_FEATURES: json.dumps(model.features.to_dict(), sort_keys=True),
    }
    if model.cnn_branch == "musicnn":
        from .musicnn import PATCH_FRAMES, PatchedPCRNN

        patches, index = distinct_patches(np.random.default_rng(0).random(tuple(x.shape), dtype=np.float32), PATCH_FRAMES)
        graph_module: torch.nn.Module = PatchedPCRNN(frozen)
        inputs: tuple = (x, torch.from_numpy(patches), torch.from_numpy(index))
        axes = {"x": {0: "n"}, "patches": {0: "p"}, "index": {0: "n"}, "logits": {0: "n"}}
        metadata[_META_PATCH_FRAMES] = str(PATCH_FRAMES)
    else:
        graph_module, inputs, axes = frozen, (x,), {"x": {0: "n"}, "logits": {0: "n"}}
    path = Path(path)
    with warnings.catch_warnings():  # the TorchScript exporter's notes on GRU batch sizes and constant folding
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph_module,
            inputs,
            str(path),
            input_names=list(axes)[:-1],
            output_names=["logits"],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
    graph = onnx.load(str(path))
    for key, value in metadata.items():
        graph.metadata_props.add(key=key, value=value)
    onnx.save(graph, str(path))

