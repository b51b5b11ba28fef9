"""The parallel CNN-RNN (PCRNN) genre classifier.

The model reads one normalised log-mel window ``(batch, 1, frames, n_mels)`` (time x mel) along
two branches and concatenates them into one linear layer that returns **logits**:

- CNN: either five conv blocks trained from scratch (:class:`ScratchCNN`, 256 features from a
  640 x 128 window) or the pretrained musicnn trunk over the window's 3-second patches
  (:class:`genrewiz.musicnn.MusicnnBranch`, 400 features); ``config.json`` says which.
- RNN: MaxPool over the spectrogram (e.g. (4, 2): 160 steps x 64 mel bins) -> bidirectional
  GRU of 64 units, ``batch_first=True`` so it runs over time within each song, never across the
  batch; the last hidden state of each direction -> 128 features.
- optionally, a second pretrained ear beside the musicnn branch: the AudioSet tagger mn04
  (:class:`genrewiz.audioset.AudioSetBranch`, ``audioset_branch`` in ``config.json``), which
  reads each window's 10-s patches on its own front end, adds 512 features, its zero-shot genre
  prior and a music probability (:meth:`PCRNN.music_logits`).

``forward`` returns logits, not probabilities: ``CrossEntropyLoss`` applies its own
log-softmax in training, and softmax happens only at prediction time. Whole songs are
classified window by window in :mod:`genrewiz.predict`. This module imports torch and the
model's own parts only; export and serving sit above it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import safetensors.torch
import torch
from huggingface_hub import PyTorchModelHubMixin, constants, hf_hub_download
from torch import nn

from .features import AudioSetFeatures, FeatureConfig
from .musicnn import MUSICNN_FEATURES

logger = logging.getLogger(__name__)

GTZAN_GENRES: tuple[str, ...] = (
    "blues",
    "classical",
    "country",
    "disco",
    "hiphop",
    "jazz",
    "metal",
    "pop",
    "reggae",
    "rock",
)

_CNN_POOLS: tuple[tuple[int, int], ...] = ((2, 2), (2, 2), (2, 2), (4, 4), (4, 4))
BRANCH_PRESETS: dict[str, dict] = {
    "scratch": {"features": FeatureConfig()},
    "musicnn": {"features": MUSICNN_FEATURES, "rnn_pool": (8, 2)},
}
"""PCRNN arguments per CNN branch: its front end, and a GRU over ~230 steps for either."""
CNN_BRANCHES = tuple(BRANCH_PRESETS)
"""The CNN branches a PCRNN can have; ``config.json`` names one as ``cnn_branch``."""
AUDIOSET_BRANCHES = ("mn04",)
"""The second, AudioSet-trained ears a musicnn PCRNN can have; ``config.json`` names one as ``audioset_branch``."""


class ScratchCNN(nn.Sequential):
    """The original PCRNN's CNN branch, trained from scratch: five (3, 1)-kernel conv blocks.

    Conv2d -> ReLU -> MaxPool with channels 16/32/64/64/64 and pools (2,2),(2,2),(2,2),(4,4),(4,4):
    a 640 x 128 window becomes 64 x 4 x 1 = 256 features.

    Computed faster than written, with the same outputs and gradients (``tests/test_speed_equivalence.py``;
    the speed-up is measured by ``benchmarks/bench_training.py``):

    - each block pools before its ReLU: ReLU is monotonic, so it commutes with max pooling, and
      it then touches 4 to 16 times fewer values (forward and backward);
    - weights and activations are channels-last (NHWC), where oneDNN's (3, 1) convolutions run
      faster than in the default NCHW layout.

    The layers keep their places (convolutions at 0, 3, 6, 9, 12), so the state-dict keys and
    shapes are the original's and every checkpoint loads as before.
    """

    def __init__(self, features: FeatureConfig, channels: list[int] | tuple[int, ...] = (16, 32, 64, 64, 64)) -> None:
        if len(channels) != len(_CNN_POOLS):
            raise ValueError(f"cnn_channels needs {len(_CNN_POOLS)} entries")
        blocks: list[nn.Module] = []
        in_channels = 1
        time, freq = features.window_frames, features.n_mels
        for out_channels, pool in zip(channels, _CNN_POOLS):
            blocks += [nn.Conv2d(in_channels, out_channels, kernel_size=(3, 1)), nn.MaxPool2d(pool), nn.ReLU()]
            in_channels = out_channels
            time, freq = (time - 2) // pool[0], freq // pool[1]
        if time < 1 or freq < 1:
            raise ValueError("window too small for five conv/pool blocks")
        super().__init__(*blocks, nn.Flatten())
        self.out_features = in_channels * time * freq
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, 1, frames, n_mels)`` -> ``(batch, out_features)``, computed channels-last."""
        return super().forward(x.contiguous(memory_format=torch.channels_last))


class PCRNN(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="genrewiz",
    tags=["audio-classification", "music-genre-classification", "gtzan", "pytorch"],
    pipeline_tag="audio-classification",
    license="mit",
):
    """Parallel CNN-RNN over a log-mel window; ``save_pretrained``/``from_pretrained`` via the Hub mixin.

    Every constructor argument is written to ``config.json``, so a checkpoint carries its
    labels, its architecture (``cnn_branch``) and the exact :class:`FeatureConfig` it was
    trained with. ``cnn_branch`` is ``"scratch"`` (:class:`ScratchCNN`) or ``"musicnn"``
    (:class:`~genrewiz.musicnn.MusicnnBranch`, pretrained on the Million Song Dataset, which
    needs :data:`~genrewiz.musicnn.MUSICNN_FEATURES`). ``dropout`` acts on the concatenated
    branch features during training only. ``tag_evidence`` (musicnn branch only) is the weight
    of the MSD tagger's own log-odds among the genres of :data:`~genrewiz.musicnn.TAG_EVIDENCE`
    (:meth:`arbitrate`; the branch's output then carries them after its pooled features). ``temperature`` divides the logits: fitted after
    training on predictions the weights did not train on (``train/calibrate.py``), it makes a
    softmax probability mean how often such an answer is right, and because it sits inside the
    model every engine and the exported graph apply it alike. ``audioset_branch`` (``"mn04"``,
    musicnn branch only) adds the AudioSet ear with its ``audioset_features``; ``audioset_prior``
    weighs its zero-shot genre log-probabilities, added to the logits before the temperature.
    """

    def __init__(
        self,
        labels: list[str] | tuple[str, ...] = GTZAN_GENRES,
        features: FeatureConfig | dict = FeatureConfig(),
        cnn_branch: str = "scratch",
        cnn_channels: list[int] | tuple[int, ...] = (16, 32, 64, 64, 64),
        gru_hidden: int = 64,
        rnn_pool: list[int] | tuple[int, int] = (4, 2),
        dropout: float = 0.0,
        temperature: float = 1.0,
        tag_evidence: float = 0.0,
        audioset_branch: str | None = None,
        audioset_features: AudioSetFeatures | dict | None = None,
        audioset_prior: float = 0.0,
    ) -> None:
        super().__init__()
        self.features = FeatureConfig.from_dict(features) if isinstance(features, dict) else features
        self.labels = list(labels)
        if len(self.labels) < 2 or len(set(self.labels)) != len(self.labels):
            raise ValueError("labels must be at least two distinct names")
        if cnn_branch == "scratch":
            self.cnn: nn.Module = ScratchCNN(self.features, cnn_channels)
        elif cnn_branch == "musicnn":
            from .musicnn import MusicnnBranch  # a room of its own, built only when a checkpoint asks for it

            self.cnn = MusicnnBranch(self.features, labels=self.labels if tag_evidence else ())
        else:
            raise ValueError(f"cnn_branch must be one of {CNN_BRANCHES}, got {cnn_branch!r}")
        if tag_evidence and cnn_branch != "musicnn":
            raise ValueError("tag_evidence needs the musicnn branch (its tag layer is the evidence)")
        self.cnn_branch = cnn_branch
        self.tag_evidence = float(tag_evidence)
        self.audioset_branch = audioset_branch
        self.audioset_prior = float(audioset_prior)
        self.audioset_features: AudioSetFeatures | None = None
        self.ear: nn.Module | None = None
        if audioset_branch is not None:
            if audioset_branch not in AUDIOSET_BRANCHES:
                raise ValueError(f"audioset_branch must be one of {AUDIOSET_BRANCHES} or None, got {audioset_branch!r}")
            if cnn_branch != "musicnn":
                raise ValueError("the AudioSet ear joins the musicnn branch (windows of its 3-s patches)")
            from .audioset import AudioSetBranch  # a room of its own, built only when a checkpoint asks for it

            self.audioset_features = (AudioSetFeatures.from_dict(audioset_features) if isinstance(audioset_features, dict)
                                      else audioset_features or AudioSetFeatures())
            self.ear = AudioSetBranch(self.labels)
        elif audioset_prior:
            raise ValueError("audioset_prior needs the AudioSet ear (audioset_branch)")

        self.rnn_pool = nn.MaxPool2d(tuple(rnn_pool))
        self.gru = nn.GRU(
            input_size=self.features.n_mels // rnn_pool[1],
            hidden_size=gru_hidden,
            batch_first=True,
            bidirectional=True,
        )
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = float(temperature)
        self.dropout = nn.Dropout(dropout)
        ear_width = self.ear.out_features if self.ear is not None else 0
        self.classifier = nn.Linear(self.cnn.out_features + 2 * gru_hidden + ear_width, len(self.labels))

    def forward(self, x: torch.Tensor, ear_patches: torch.Tensor | None = None) -> torch.Tensor:
        """Map ``(batch, 1, frames, n_mels)`` windows to ``(batch, n_labels)`` logits.

        A model with the AudioSet ear also reads each window's ``(batch, patches, frames, mels)``
        10-s patches on that ear's front end (:func:`genrewiz.features.audioset_windows`).
        """
        return self.logits_from_cnn(self.cnn(x), x, self.ear_summaries(ear_patches))

    def ear_summaries(self, ear_patches: torch.Tensor | None) -> torch.Tensor | None:
        """``(n, patches, frames, mels)`` -> ``(n, patches, summary)``: what the AudioSet ear says of each patch."""
        if self.ear is None:
            return None
        if ear_patches is None:
            raise ValueError("this model has the AudioSet ear: pass each window's ear patches")
        n, k = ear_patches.shape[:2]
        return self.ear.patch_summaries(ear_patches.flatten(0, 1)).view(n, k, -1)

    def logits_from_cnn(self, cnn_features: torch.Tensor, x: torch.Tensor, ear: torch.Tensor | None = None) -> torch.Tensor:
        """Logits from the CNN branch's output, the windows the RNN branch reads and the AudioSet ear's patch summaries.

        Training with frozen pretrained branches passes their cached outputs here instead of recomputing them.
        """
        seq = self.rnn_pool(x).squeeze(1)
        _, hidden = self.gru(seq)
        rnn = torch.cat([hidden[-2], hidden[-1]], dim=1)
        width = self.cnn.out_features
        parts = [cnn_features[:, :width], rnn]
        if self.ear is not None:
            if ear is None:
                raise ValueError("this model has the AudioSet ear: pass its patch summaries")
            parts.append(self.ear.features(ear))
        logits = self.classifier(self.dropout(torch.cat(parts, dim=1)))
        if self.tag_evidence:
            logits = self.arbitrate(logits, cnn_features[:, width:])
        if self.audioset_prior:
            logits = logits + self.audioset_prior * self.ear.prior(ear)
        return logits / self.temperature

    def music_logits(self, ear: torch.Tensor) -> torch.Tensor:
        """``(n,)`` log-odds that each window is music, from the AudioSet ear's patch summaries."""
        if self.ear is None:
            raise ValueError("only a model with the AudioSet ear tells music from non-music")
        return self.ear.music_logits(ear)

    def arbitrate(self, logits: torch.Tensor, evidence: torch.Tensor) -> torch.Tensor:
        """Let the tagger's ``evidence`` re-divide, among the genres it speaks for, the probability the genre layer gave them.

        The genres of :data:`~genrewiz.musicnn.TAG_EVIDENCE` keep their total probability; within
        them, ``tag_evidence`` times the evidence is added to their logits. Every other genre's
        logit, and so every answer outside the group, is unchanged.
        """
        group = self.cnn.evidence.amax(dim=1) > 0
        inside = logits.masked_fill(~group, float("-inf"))
        mass = torch.logsumexp(inside, dim=1, keepdim=True)
        moved = mass + torch.log_softmax(inside + self.tag_evidence * evidence, dim=1)
        return torch.where(group, moved, logits)

    def _save_pretrained(self, save_directory: Path) -> None:
        """Write ``model.safetensors`` (the mixin's) and ``model.onnx`` exported from those very weights.

        The ONNX graph is what :class:`~genrewiz.predict.GenreClassifier` serves with ONNX
        Runtime; it records the SHA-256 of the weights file so a stale graph is never used.
        Exporting needs the ``onnx`` package (a training dependency): without it only the
        weights are written, and the checkpoint is served by PyTorch.
        """
        super()._save_pretrained(save_directory)
        from .checkpoint import ONNX_FILE, WEIGHTS_FILE, weights_digest
        from .export import export_onnx

        onnx_path = Path(save_directory) / ONNX_FILE
        onnx_path.unlink(missing_ok=True)
        try:
            import onnx  # noqa: F401  (checked here so a missing package is one clear log line)
        except ImportError:
            logger.warning("onnx is not installed: %s not written; this checkpoint will run in PyTorch.", onnx_path)
            return
        export_onnx(self, onnx_path, weights_digest(Path(save_directory) / WEIGHTS_FILE))

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        map_location: str = "cpu",
        strict: bool = True,
        **model_kwargs,
    ) -> PCRNN:
        """Load ``model.safetensors`` strictly; never fall back to a pickle, never skip a layer.

        The mixin's default loads with ``strict=False`` (a mismatched checkpoint would come back
        with random layers) and tries ``pytorch_model.bin`` pickles; neither is acceptable here,
        so ``strict`` is accepted only to match the mixin's signature and loading is always strict.
        """
        model = cls(**model_kwargs)
        if os.path.isdir(model_id):
            model_file = os.path.join(model_id, constants.SAFETENSORS_SINGLE_FILE)
            if not os.path.isfile(model_file):
                raise FileNotFoundError(f"no {constants.SAFETENSORS_SINGLE_FILE} in {model_id}")
        else:
            model_file = hf_hub_download(
                repo_id=model_id,
                filename=constants.SAFETENSORS_SINGLE_FILE,
                revision=revision,
                cache_dir=cache_dir,
                force_download=force_download,
                token=token,
                local_files_only=local_files_only,
            )
        safetensors.torch.load_model(model, model_file, strict=True, device=map_location)
        model.eval()
        return model
