"""Inference engines: the same window probabilities from PyTorch or from ONNX Runtime, behind one interface.

An :class:`Engine` has ``name``, ``labels``, ``config`` and ``window_probabilities``;
:func:`load_engine` picks one for a checkpoint folder. A folder may hold ``model.onnx`` next to
``model.safetensors`` (:meth:`genrewiz.model.PCRNN.save_pretrained` writes both, through
:mod:`genrewiz.export`). ONNX Runtime runs the graph much faster than torch eager and imports
in a fraction of torch's time, so :class:`OnnxEngine` serves whenever the graph matches the
weights beside it: the graph carries their SHA-256, the labels and the
:class:`~genrewiz.features.FeatureConfig` (:mod:`genrewiz.checkpoint`), so a stale graph is
never used. :class:`TorchEngine` runs the PCRNN itself: the fallback, and what training uses.

This module imports neither torch nor onnx at import time; each is imported where it is needed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from .checkpoint import (
    META_FEATURES,
    META_LABELS,
    META_PATCH_FRAMES,
    META_QUANTIZATION,
    META_WEIGHTS,
    ONNX_FILE,
    WEIGHTS_FILE,
    weights_digest,
)
from .features import FeatureConfig

if TYPE_CHECKING:
    from .model import PCRNN

logger = logging.getLogger(__name__)

_STAGE_INPUTS = ("patches", "x", "embeddings")
PATCH_CHUNK = 4
"""Patches the musicnn trunk runs on at once: its front-end activations are tens of MB per patch."""


Progress = Callable[[float], None]
"""Called with the fraction of a song's model work done so far (0 to 1), e.g. to drive a progress bar."""


class Engine(Protocol):
    """What runs a checkpoint's model: its labels, its feature settings, and window probabilities."""

    name: str
    turns: FairTurns | None
    """When set, concurrent songs' model runs take turns in arrival order (the app sets it)."""

    @property
    def description(self) -> str:
        """What runs the model, for a log line (e.g. ``ONNX Runtime with int8 Conv``)."""
        ...

    @property
    def labels(self) -> tuple[str, ...]: ...

    @property
    def config(self) -> FeatureConfig: ...

    def window_probabilities(self, windows: np.ndarray, progress: Progress | None = None) -> np.ndarray:
        """Softmax probabilities ``(n, n_labels)`` for ``(n, 1, frames, n_mels)`` windows."""
        ...


def load_engine(
    directory: str | Path, num_threads: int | None = 1, batch_size: int = 16, patch_chunk: int = PATCH_CHUNK
) -> Engine:
    """The engine for a checkpoint folder: ONNX Runtime when its graph matches its weights, PyTorch otherwise.

    ``num_threads`` is the intra-op thread count of whichever runs the model (for torch,
    process-wide); ``None`` leaves the library's default (one thread per core).
    """
    engine = OnnxEngine.for_checkpoint(directory, num_threads, batch_size, patch_chunk)
    if engine is not None:
        return engine
    import torch

    from .model import PCRNN

    if num_threads is not None:
        torch.set_num_threads(num_threads)
    return TorchEngine(PCRNN.from_pretrained(directory), batch_size, patch_chunk)


def distinct_patches(windows: np.ndarray, patch_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Each distinct patch of ``(n, 1, frames, mels)`` windows once, and where each window's patches are.

    Returns ``(patches, index)``: ``(p, patch_frames, mels)`` and ``(n, frames // patch_frames)``
    with ``patches[index[w, k]]`` equal to patch ``k`` of window ``w``. Windows overlap by half
    and the musicnn branch's hop is a whole number of patches, so consecutive windows share
    patches: the pretrained trunk (nearly all of the musicnn PCRNN's work) then runs about half
    as often on a long song, with the same result. Patches are told apart by a 128-bit hash of
    their bytes, so only the distinct ones are ever copied.
    """
    n, _, _, mels = windows.shape
    per_window = windows.shape[2] // patch_frames
    cut = windows[:, 0, : per_window * patch_frames].reshape(n * per_window, patch_frames, mels)
    first: dict[bytes, int] = {}
    index = np.array(
        [first.setdefault(hashlib.blake2b(np.ascontiguousarray(patch), digest_size=16).digest(), len(first)) for patch in cut],
        dtype=np.int64,
    )
    keep = np.unique(index, return_index=True)[1]
    return np.ascontiguousarray(cut[keep]), index.reshape(n, per_window)


def patched_logits(
    windows: np.ndarray,
    patch_frames: int,
    embed: Callable[[np.ndarray], np.ndarray],
    head: Callable[[np.ndarray, np.ndarray], np.ndarray],
    patch_chunk: int,
    batch_size: int,
    progress: Progress | None = None,
) -> np.ndarray:
    """A musicnn PCRNN's logits for ``(n, 1, frames, mels)`` windows, in memory that does not grow with ``n``.

    The trunk (``embed``: patches -> ``(p, 200)`` embeddings) runs over the song's distinct
    patches ``patch_chunk`` at a time, since its front-end activations are tens of MB per patch;
    only the 200-float embeddings are kept, and the head (``head``: per-window embeddings and
    windows -> logits) runs ``batch_size`` windows at a time. Chunk sizes change no result
    beyond float rounding. ``progress`` is called with the fraction of the trunk's work done
    after each chunk (the head's is negligible).
    """
    patches, index = distinct_patches(windows, patch_frames)
    chunks = []
    for i in range(0, len(patches), patch_chunk):
        chunks.append(embed(patches[i : i + patch_chunk]))
        if progress is not None:
            progress(min(i + patch_chunk, len(patches)) / len(patches))
    embeddings = np.concatenate(chunks)
    del patches, chunks
    logits = [
        head(embeddings[index[i : i + batch_size]], np.ascontiguousarray(windows[i : i + batch_size], dtype=np.float32))
        for i in range(0, len(windows), batch_size)
    ]
    return np.concatenate(logits)


class FairTurns:
    """A first-come, first-served lock: the model's runs take turns in the order they asked.

    A server that analyses several songs at once gives each ONNX Runtime run (a few patches, or
    a few windows' head) its turn in arrival order, so a short song's few runs go in between a
    long song's many instead of after all of them. ``threading.Lock`` promises no order.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._next_ticket = 0
        self._serving = 0

    @property
    def waiting(self) -> int:
        """Runs holding or waiting for a turn."""
        with self._changed:
            return self._next_ticket - self._serving

    def __enter__(self) -> None:
        with self._changed:
            ticket = self._next_ticket
            self._next_ticket += 1
            self._changed.wait_for(lambda: self._serving == ticket)

    def __exit__(self, *exc: object) -> None:
        with self._changed:
            self._serving += 1
            self._changed.notify_all()


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float32, stable for large logits."""
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32)


class TorchEngine:
    """The PCRNN in PyTorch, on whatever device it is on (training validates on the GPU this way).

    A musicnn PCRNN runs in two stages as the ONNX graph does (:func:`patched_logits`): the trunk
    over distinct patches ``patch_chunk`` at a time, then the head ``batch_size`` windows at a time.
    """

    name = "torch"

    def __init__(self, model: PCRNN, batch_size: int = 16, patch_chunk: int = PATCH_CHUNK) -> None:
        self.model = model.eval()
        self.batch_size = batch_size
        self.patch_chunk = patch_chunk
        self.turns: FairTurns | None = None

    description = "PyTorch"

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.model.labels)

    @property
    def config(self) -> FeatureConfig:
        return self.model.features

    def window_probabilities(self, windows: np.ndarray, progress: Progress | None = None) -> np.ndarray:
        """Softmax probabilities ``(n, n_labels)`` for ``(n, 1, frames, n_mels)`` windows, in bounded batches."""
        import torch

        device = next(self.model.parameters()).device
        with torch.inference_mode():
            if self.model.cnn_branch == "musicnn":
                from .musicnn import PATCH_FRAMES, logits_from_embeddings

                def embed(patches: np.ndarray) -> np.ndarray:
                    with self.turns or contextlib.nullcontext():
                        return self.model.cnn.trunk.embed(torch.from_numpy(patches).to(device)).cpu().numpy()

                def head(embeddings: np.ndarray, x: np.ndarray) -> np.ndarray:
                    tensors = torch.from_numpy(embeddings).to(device), torch.from_numpy(x).to(device)
                    with self.turns or contextlib.nullcontext():
                        return logits_from_embeddings(self.model, *tensors).cpu().numpy()

                logits = patched_logits(windows, PATCH_FRAMES, embed, head, self.patch_chunk, self.batch_size, progress)
                return softmax(logits)
            batches = [self.model(torch.from_numpy(windows[i : i + self.batch_size]).to(device)).cpu().numpy()
                       for i in range(0, len(windows), self.batch_size)]
        return softmax(np.concatenate(batches))

    def head_probabilities(self, windows: np.ndarray, cnn_features: np.ndarray) -> np.ndarray:
        """Softmax probabilities from the CNN branch's known output for ``windows`` (training caches a frozen branch's).

        Only the rest of the model runs: the RNN branch over the windows and the classifier.
        """
        import torch

        device = next(self.model.parameters()).device
        with torch.inference_mode():
            batches = [
                self.model.logits_from_cnn(torch.from_numpy(cnn_features[i : i + self.batch_size]).to(device),
                                torch.from_numpy(windows[i : i + self.batch_size]).to(device)).cpu().numpy()
                for i in range(0, len(windows), self.batch_size)
            ]
        return softmax(np.concatenate(batches))


class OnnxEngine:
    """An exported PCRNN run by ONNX Runtime on the CPU.

    ``num_threads`` is ONNX Runtime's intra-op thread count per call (``None``: its default, one
    per core). One is right for GenreWiz's callers, which already run work side by side: the app
    serves two requests at once (``run`` is thread-safe, each call uses its own thread) and the
    CLI decodes in worker processes on the other cores. Threads do not spin while idle, so a
    busy, shared machine does not lose a core to waiting.

    A musicnn PCRNN's graph has two stages (:class:`genrewiz.export.PatchedPCRNN`), run as
    :func:`patched_logits` says. ONNX Runtime's CPU memory arena stays on (without it every
    activation is a fresh allocation and the model runs markedly slower), but the runs that end
    a song (the head's) shrink it, so the arena holds a few patches' activations while a song
    is analysed and gives them back to the system after: a served app returns to its idle size.

    ``quantization`` is what the graph's metadata says was quantised (``None``: all float32).
    ``turns`` (``None``: runs go as they come) makes concurrent songs' runs take turns
    (:class:`FairTurns`), as the app sets it.
    """

    name = "onnxruntime"

    def __init__(
        self, path: str | Path, num_threads: int | None = 1, batch_size: int = 16, patch_chunk: int = PATCH_CHUNK
    ) -> None:
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
        self._release = ort.RunOptions()
        self._release.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        self.turns: FairTurns | None = None
        self.batch_size = batch_size
        self.patch_chunk = patch_chunk
        meta = self.session.get_modelmeta().custom_metadata_map
        self.weights_sha256 = meta.get(META_WEIGHTS)
        self.labels: tuple[str, ...] = tuple(json.loads(meta[META_LABELS])) if META_LABELS in meta else ()
        self.config = FeatureConfig.from_dict(json.loads(meta[META_FEATURES])) if META_FEATURES in meta else None
        self.quantization: dict | None = json.loads(meta[META_QUANTIZATION]) if META_QUANTIZATION in meta else None
        self._inputs = tuple(i.name for i in self.session.get_inputs())
        if self._inputs not in (_STAGE_INPUTS, ("x",)):
            raise ValueError(f"graph inputs {self._inputs} are neither {_STAGE_INPUTS} nor ('x',): exported by an older GenreWiz")
        self.patch_frames = int(meta[META_PATCH_FRAMES]) if self._inputs == _STAGE_INPUTS else None

    @classmethod
    def for_checkpoint(
        cls, directory: str | Path, num_threads: int | None = 1, batch_size: int = 16, patch_chunk: int = PATCH_CHUNK
    ) -> OnnxEngine | None:
        """The engine for a checkpoint folder's ``model.onnx``, or ``None`` to use torch instead.

        ``None`` when the folder has no graph, or one whose recorded weights hash, labels or
        features are missing or differ from ``model.safetensors``, or one holding quantised
        operators that its metadata does not declare (a log line says why).
        """
        directory = Path(directory)
        onnx_path, weights = directory / ONNX_FILE, directory / WEIGHTS_FILE
        if not onnx_path.is_file() or not weights.is_file():
            return None
        try:
            engine = cls(onnx_path, num_threads, batch_size, patch_chunk)
        except Exception as err:  # onnxruntime raises its own exception types for unreadable graphs
            logger.warning("Could not load %s (%s); running the model in PyTorch.", onnx_path, err)
            return None
        if engine.weights_sha256 != weights_digest(weights) or engine.config is None or not engine.labels:
            logger.warning("%s was not exported from the %s beside it; running the model in PyTorch.", onnx_path, WEIGHTS_FILE)
            return None
        if engine.quantization is None and has_quantized_operators(onnx_path):
            logger.warning("%s holds quantised operators its metadata does not declare; running the model in PyTorch.", onnx_path)
            return None
        return engine

    @property
    def description(self) -> str:
        return "ONNX Runtime" + (" with int8 " + ", ".join(self.quantization["operators"]) if self.quantization else "")

    def window_probabilities(self, windows: np.ndarray, progress: Progress | None = None) -> np.ndarray:
        """Softmax probabilities ``(n, n_labels)`` for ``(n, 1, frames, n_mels)`` windows, in bounded batches."""
        if self.patch_frames is None:
            batches = [
                self._run(None, {"x": np.ascontiguousarray(windows[i : i + self.batch_size], dtype=np.float32)}, self._release)[0]
                for i in range(0, len(windows), self.batch_size)
            ]
            return softmax(np.concatenate(batches))
        no_patches = np.zeros((0, self.patch_frames, windows.shape[3]), dtype=np.float32)

        def embed(patches: np.ndarray) -> np.ndarray:
            return self._run(["patch_embeddings"], self.trunk_feeds(patches))[0]

        def head(embeddings: np.ndarray, x: np.ndarray) -> np.ndarray:
            feeds = {"patches": no_patches, "x": x, "embeddings": embeddings}
            return self._run(["logits"], feeds, self._release)[0]

        logits = patched_logits(windows, self.patch_frames, embed, head, self.patch_chunk, self.batch_size, progress)
        return softmax(logits)

    def trunk_feeds(self, patches: np.ndarray) -> dict[str, np.ndarray]:
        """The feeds that run the musicnn graph's trunk stage on ``patches``.

        ONNX Runtime runs every node whatever outputs are asked for, and a GRU over zero windows
        aborts the process: the head's inputs get one blank window (the head stage, zero patches).
        """
        assert self.config is not None
        per_window, embedding_size = self.session.get_inputs()[2].shape[1:]
        return {
            "patches": patches,
            "x": np.zeros((1, 1, self.config.window_frames, self.config.n_mels), dtype=np.float32),
            "embeddings": np.zeros((1, per_window, embedding_size), dtype=np.float32),
        }

    def _run(self, outputs: list[str] | None, feeds: dict[str, np.ndarray], options: object = None) -> list[np.ndarray]:
        """One ONNX Runtime run, in its turn when :attr:`turns` is set."""
        if self.turns is None:
            return self.session.run(outputs, feeds, options)
        with self.turns:
            return self.session.run(outputs, feeds, options)


def has_quantized_operators(path: str | Path) -> bool:
    """Whether an ONNX file holds quantised operators, read from its bytes (serving does not import ``onnx``).

    Operator types are stored as plain strings in the protobuf, so their names in the file's
    bytes find them; a float32 graph has none of them.
    """
    data = Path(path).read_bytes()
    return any(op in data for op in (b"DequantizeLinear", b"QLinearConv", b"ConvInteger", b"MatMulInteger"))
