"""Inference engines: the same window probabilities from PyTorch or from ONNX Runtime, behind one interface.

An :class:`Engine` has ``name``, ``labels``, ``config``, ``audioset_config`` and ``window_outputs``
(genre probabilities and, with the AudioSet ear, music probabilities per window);
:func:`load_engine` picks one for a checkpoint folder. A folder may hold ``model.onnx`` next to
``model.safetensors`` (:meth:`genrewiz.model.PCRNN.save_pretrained` writes both, through
:mod:`genrewiz.export`). ONNX Runtime runs the graph much faster than torch eager and imports
in a fraction of torch's time, so :class:`OnnxEngine` serves whenever the graph matches the
weights beside it: the graph carries their SHA-256, the labels and each ear's feature
dataclass (:mod:`genrewiz.checkpoint`), so a stale graph is
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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from .checkpoint import (
    META_AUDIOSET_FEATURES,
    META_FEATURES,
    META_LABELS,
    META_PATCH_FRAMES,
    META_QUANTIZATION,
    META_WEIGHTS,
    ONNX_FILE,
    WEIGHTS_FILE,
    weights_digest,
)
from .features import AudioSetFeatures, FeatureConfig

if TYPE_CHECKING:
    from .model import PCRNN

logger = logging.getLogger(__name__)

_STAGE_INPUTS = ("patches", "x", "embeddings")
_EAR_STAGE_INPUTS = (*_STAGE_INPUTS, "ear_patches", "ear_summaries")
PATCH_CHUNK = 4
"""Patches the musicnn trunk runs on at once: its front-end activations are tens of MB per patch."""


Progress = Callable[[float], None]
"""Called with the fraction of a song's model work done so far (0 to 1), e.g. to drive a progress bar."""


class Engine(Protocol):
    """What runs a checkpoint's model: its labels, its feature settings, and window probabilities."""

    name: str
    turns: contextlib.AbstractContextManager | None
    """When set, concurrent songs' model runs take turns (a :class:`FairTurns`, or the app's own per-client turns)."""

    @property
    def description(self) -> str:
        """What runs the model, for a log line (e.g. ``ONNX Runtime with int8 Conv``)."""
        ...

    @property
    def labels(self) -> tuple[str, ...]: ...

    @property
    def config(self) -> FeatureConfig: ...

    @property
    def audioset_config(self) -> AudioSetFeatures | None:
        """The AudioSet ear's front end, or ``None`` for a model without that ear."""
        ...

    def window_outputs(
        self, windows: np.ndarray, progress: Progress | None = None, ear_patches: np.ndarray | None = None
    ) -> WindowOutputs:
        """Probabilities (and, with the AudioSet ear, music probabilities) for ``(n, 1, frames, n_mels)`` windows."""
        ...


@dataclass(frozen=True)
class WindowOutputs:
    """What a model says of each window: genre ``probabilities`` ``(n, n_labels)`` and, with the AudioSet ear, ``music`` ``(n,)``."""

    probabilities: np.ndarray
    music: np.ndarray | None = None


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
    head: Callable[[np.ndarray, np.ndarray, np.ndarray | None], tuple[np.ndarray, np.ndarray | None]],
    patch_chunk: int,
    batch_size: int,
    progress: Progress | None = None,
    ear_patches: np.ndarray | None = None,
    ear_embed: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """A musicnn PCRNN's logits (and music log-odds) for ``(n, 1, frames, mels)`` windows, in memory that does not grow with ``n``.

    The trunk (``embed``: patches -> ``(p, 200)`` embeddings) runs over the song's distinct
    patches ``patch_chunk`` at a time, since its front-end activations are tens of MB per patch;
    only the 200-float embeddings are kept. A model with the AudioSet ear has its 10-s
    ``ear_patches`` ``(n, k, frames, mels)`` summarised the same way (``ear_embed``). The head
    (``head``: per-window embeddings, windows and ear summaries -> logits and music log-odds,
    the latter ``None`` without the ear) runs ``batch_size`` windows at a time. Chunk sizes
    change no result beyond float rounding. ``progress`` is called with the fraction of the
    pretrained networks' work done after each chunk (the head's is negligible).
    """
    patches, index = distinct_patches(windows, patch_frames)
    flat = None if ear_patches is None else ear_patches.reshape(-1, *ear_patches.shape[2:])
    total = len(patches) + (0 if flat is None else len(flat))
    done = 0

    def chunked(items: np.ndarray, run: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        nonlocal done
        chunks = []
        for i in range(0, len(items), patch_chunk):
            chunks.append(run(np.ascontiguousarray(items[i : i + patch_chunk])))
            done += len(chunks[-1])
            if progress is not None:
                progress(done / total)
        return np.concatenate(chunks)

    embeddings = chunked(patches, embed)
    del patches
    summaries = None
    if flat is not None and ear_embed is not None:
        summaries = chunked(flat, ear_embed).reshape(len(windows), ear_patches.shape[1], -1)
    outputs = [
        head(embeddings[index[i : i + batch_size]], np.ascontiguousarray(windows[i : i + batch_size], dtype=np.float32),
             None if summaries is None else summaries[i : i + batch_size])
        for i in range(0, len(windows), batch_size)
    ]
    logits = np.concatenate([o[0] for o in outputs])
    music = None if summaries is None else np.concatenate([o[1] for o in outputs])
    return logits, music


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


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Element-wise logistic function in float32, without overflow for large log-odds."""
    return (0.5 * (1.0 + np.tanh(0.5 * logits.astype(np.float64)))).astype(np.float32)


def outputs(logits: np.ndarray, music: np.ndarray | None) -> WindowOutputs:
    """Window probabilities from a model's logits and music log-odds."""
    return WindowOutputs(softmax(logits), None if music is None else sigmoid(music))


class _WindowProbabilities:
    """An engine's ``window_probabilities``: the genre half of its ``window_outputs``, for callers that need no music score."""

    def window_probabilities(
        self, windows: np.ndarray, progress: Progress | None = None, ear_patches: np.ndarray | None = None
    ) -> np.ndarray:
        """Softmax probabilities ``(n, n_labels)`` for ``(n, 1, frames, n_mels)`` windows, in bounded batches."""
        return self.window_outputs(windows, progress, ear_patches).probabilities  # type: ignore[attr-defined]


class TorchEngine(_WindowProbabilities):
    """The PCRNN in PyTorch, on whatever device it is on (training validates on the GPU this way).

    A musicnn PCRNN runs in two stages as the ONNX graph does (:func:`patched_logits`): the trunk
    over distinct patches ``patch_chunk`` at a time, then the head ``batch_size`` windows at a time.
    """

    name = "torch"

    def __init__(self, model: PCRNN, batch_size: int = 16, patch_chunk: int = PATCH_CHUNK) -> None:
        self.model = model.eval()
        self.batch_size = batch_size
        self.patch_chunk = patch_chunk
        self.turns: contextlib.AbstractContextManager | None = None

    description = "PyTorch"

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.model.labels)

    @property
    def config(self) -> FeatureConfig:
        return self.model.features

    @property
    def audioset_config(self) -> AudioSetFeatures | None:
        return self.model.audioset_features

    def window_outputs(
        self, windows: np.ndarray, progress: Progress | None = None, ear_patches: np.ndarray | None = None
    ) -> WindowOutputs:
        """Genre and music probabilities of ``(n, 1, frames, n_mels)`` windows (and their ear patches), in bounded batches."""
        import torch

        device = next(self.model.parameters()).device
        turn = self._turn
        with torch.inference_mode():
            if self.model.cnn_branch == "musicnn":
                from .musicnn import PATCH_FRAMES, logits_from_embeddings

                def embed(patches: np.ndarray) -> np.ndarray:
                    with turn():
                        return self.model.cnn.trunk.embed(torch.from_numpy(patches).to(device)).cpu().numpy()

                def ear_embed(patches: np.ndarray) -> np.ndarray:
                    with turn():
                        return self.model.ear.patch_summaries(torch.from_numpy(patches).to(device)).cpu().numpy()

                def head(embeddings: np.ndarray, x: np.ndarray, ear: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
                    tensors = [torch.from_numpy(a).to(device) for a in (embeddings, x)]
                    summaries = None if ear is None else torch.from_numpy(ear).to(device)
                    with turn():
                        logits = logits_from_embeddings(self.model, *tensors, summaries).cpu().numpy()
                        music = None if summaries is None else self.model.music_logits(summaries).cpu().numpy()
                    return logits, music

                self._check_ear(ear_patches)
                return outputs(*patched_logits(windows, PATCH_FRAMES, embed, head, self.patch_chunk, self.batch_size,
                                               progress, ear_patches, ear_embed))
            batches = [self.model(torch.from_numpy(windows[i : i + self.batch_size]).to(device)).cpu().numpy()
                       for i in range(0, len(windows), self.batch_size)]
        return outputs(np.concatenate(batches), None)

    def _turn(self) -> contextlib.AbstractContextManager:
        return self.turns or contextlib.nullcontext()

    def _check_ear(self, ear_patches: np.ndarray | None) -> None:
        if (self.model.ear is not None) != (ear_patches is not None):
            raise ValueError("the model's AudioSet ear and the ear patches given must come together")

    def head_outputs(self, windows: np.ndarray, cnn_features: np.ndarray, ear: np.ndarray | None = None) -> WindowOutputs:
        """Probabilities from the pretrained branches' known outputs for ``windows`` (training caches frozen branches').

        Only the rest of the model runs: the RNN branch over the windows and the classifier.
        """
        import torch

        device = next(self.model.parameters()).device
        logits, music = [], []
        with torch.inference_mode():
            for i in range(0, len(windows), self.batch_size):
                summaries = None if ear is None else torch.from_numpy(ear[i : i + self.batch_size]).to(device)
                logits.append(self.model.logits_from_cnn(torch.from_numpy(cnn_features[i : i + self.batch_size]).to(device),
                                                         torch.from_numpy(windows[i : i + self.batch_size]).to(device),
                                                         summaries).cpu().numpy())
                if summaries is not None:
                    music.append(self.model.music_logits(summaries).cpu().numpy())
        return outputs(np.concatenate(logits), np.concatenate(music) if music else None)


class OnnxEngine(_WindowProbabilities):
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
        self.turns: contextlib.AbstractContextManager | None = None
        self.batch_size = batch_size
        self.patch_chunk = patch_chunk
        meta = self.session.get_modelmeta().custom_metadata_map
        self.weights_sha256 = meta.get(META_WEIGHTS)
        self.labels: tuple[str, ...] = tuple(json.loads(meta[META_LABELS])) if META_LABELS in meta else ()
        self.config = FeatureConfig.from_dict(json.loads(meta[META_FEATURES])) if META_FEATURES in meta else None
        self.audioset_config = (AudioSetFeatures.from_dict(json.loads(meta[META_AUDIOSET_FEATURES]))
                                if META_AUDIOSET_FEATURES in meta else None)
        self.quantization: dict | None = json.loads(meta[META_QUANTIZATION]) if META_QUANTIZATION in meta else None
        self._inputs = tuple(i.name for i in self.session.get_inputs())
        if self._inputs not in (_EAR_STAGE_INPUTS, _STAGE_INPUTS, ("x",)):
            raise ValueError(f"graph inputs {self._inputs} are none of {_EAR_STAGE_INPUTS}, {_STAGE_INPUTS} or ('x',): "
                             "exported by another GenreWiz")
        if (self._inputs == _EAR_STAGE_INPUTS) != (self.audioset_config is not None):
            raise ValueError("the graph's AudioSet-ear inputs and its recorded ear front end do not agree")
        self.patch_frames = int(meta[META_PATCH_FRAMES]) if self._inputs != ("x",) else None

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

    def window_outputs(
        self, windows: np.ndarray, progress: Progress | None = None, ear_patches: np.ndarray | None = None
    ) -> WindowOutputs:
        """Genre and music probabilities of ``(n, 1, frames, n_mels)`` windows (and their ear patches), in bounded batches."""
        if (self.audioset_config is not None) != (ear_patches is not None):
            raise ValueError("the model's AudioSet ear and the ear patches given must come together")
        if self.patch_frames is None:
            batches = [
                self._run(None, {"x": np.ascontiguousarray(windows[i : i + self.batch_size], dtype=np.float32)}, self._release)[0]
                for i in range(0, len(windows), self.batch_size)
            ]
            return outputs(np.concatenate(batches), None)
        blank = self._blank_feeds()

        def embed(patches: np.ndarray) -> np.ndarray:
            return self._run(["patch_embeddings"], self.trunk_feeds(patches))[0]

        def ear_embed(patches: np.ndarray) -> np.ndarray:
            return self._run(["ear_patch_summaries"], blank | {"ear_patches": patches})[0]

        def head(embeddings: np.ndarray, x: np.ndarray, ear: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
            feeds = blank | {"x": x, "embeddings": embeddings}
            if ear is None:
                return self._run(["logits"], feeds, self._release)[0], None
            logits, music = self._run(["logits", "music"], feeds | {"ear_summaries": ear}, self._release)
            return logits, music

        return outputs(*patched_logits(windows, self.patch_frames, embed, head, self.patch_chunk, self.batch_size,
                                       progress, ear_patches, ear_embed))

    def trunk_feeds(self, patches: np.ndarray) -> dict[str, np.ndarray]:
        """The feeds that run the musicnn graph's trunk stage on ``patches``."""
        return self._blank_feeds() | {"patches": patches}

    def _blank_feeds(self) -> dict[str, np.ndarray]:
        """Feeds for every input a stage does not read: no patches, and one blank window for the head.

        ONNX Runtime runs every node whatever outputs are asked for, and a GRU over zero windows
        aborts the process, so the head's inputs get one blank window rather than none.
        """
        assert self.config is not None
        shapes = {i.name: i.shape for i in self.session.get_inputs()}
        feeds = {
            "patches": np.zeros((0, self.patch_frames, self.config.n_mels), dtype=np.float32),
            "x": np.zeros((1, 1, self.config.window_frames, self.config.n_mels), dtype=np.float32),
            "embeddings": np.zeros((1, *shapes["embeddings"][1:]), dtype=np.float32),
        }
        if self.audioset_config is not None:
            feeds["ear_patches"] = np.zeros((0, self.audioset_config.patch_frames, self.audioset_config.n_mels), dtype=np.float32)
            feeds["ear_summaries"] = np.zeros((1, *shapes["ear_summaries"][1:]), dtype=np.float32)
        return feeds

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
