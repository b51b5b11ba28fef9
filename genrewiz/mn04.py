"""The pretrained AudioSet ear: EfficientAT's mn04_as (Schmid, Koutini and Widmer, ICASSP 2023).

:class:`MN04` is the width-0.4 MobileNetV3-style tagger trained on AudioSet (about 2 million
YouTube clips, 527 classes) by Transformer-to-CNN knowledge distillation: a 3x3 stem, 15
inverted-residual blocks (depthwise convolutions, channel squeeze-excitation in some, ReLU early
and Hardswish late, as in MobileNetV3), a 1x1 convolution to 384 channels, then average pooling
and a two-layer classifier. It reads :func:`genrewiz.features.audioset_log_mel` (32 kHz,
128 Kaldi mels, trained on 10-s patches of 1,000 frames; any number of frames goes through).
Its module and parameter names are those of the authors' release, so the converted weights
(``train/convert_mn04.py`` -> ``genrewiz/pretrained/mn04_as.safetensors``, MIT licence) load by
name, strictly.

AudioSet's class list names all ten GTZAN genres (:data:`GENRE_CLASSES`) and the classes that
tell music from what is not (:data:`MUSIC_CLASSES`): the zero-shot knowledge of the ear.
"""

from __future__ import annotations

import csv
from pathlib import Path

import safetensors.torch
import torch
from torch import nn

from .features import AudioSetFeatures

PATCH_FRAMES = 1000
"""Frames of the 10-s patches mn04_as was trained on (32 kHz, hop 320)."""
EMBEDDING_SIZE = 512
"""Units of the classifier's hidden layer (after the first Linear and Hardswish): :meth:`MN04.embed`."""
FEATURE_CHANNELS = 384
"""Channels of the last convolution's map: :meth:`MN04.feature_map`."""
MN04_FEATURES = AudioSetFeatures()
"""mn04_as's front end (the :class:`AudioSetFeatures` defaults)."""

_PRETRAINED = Path(__file__).with_name("pretrained")
PRETRAINED_WEIGHTS = _PRETRAINED / "mn04_as.safetensors"
"""The converted mn04_as weights shipped in the package (see ``genrewiz/pretrained/README.md``)."""
AUDIOSET_LABELS_FILE = _PRETRAINED / "class_labels_indices.csv"
"""AudioSet's class list (index, mid, display name; AudioSet ontology, CC BY 4.0)."""


def _read_labels(path: Path) -> tuple[str, ...]:
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if [int(row["index"]) for row in rows] != list(range(len(rows))):
        raise ValueError(f"{path}: class indices are not 0..{len(rows) - 1} in order")
    return tuple(row["display_name"] for row in rows)


AUDIOSET_LABELS: tuple[str, ...] = _read_labels(AUDIOSET_LABELS_FILE)
"""The display names of mn04_as's 527 outputs, in order."""

GENRE_CLASSES: tuple[str, ...] = (
    "Blues", "Classical music", "Country", "Disco", "Hip hop music",
    "Jazz", "Heavy metal", "Pop music", "Reggae", "Rock music",
)  # fmt: skip
"""AudioSet's names for the ten GTZAN genres, in GTZAN's order (blues classical country disco hiphop jazz metal pop reggae rock)."""
MUSIC_CLASSES: tuple[str, ...] = (
    "Music",
    "Speech", "Conversation", "Narration, monologue", "Speech synthesizer",
    "Silence", "Noise", "Environmental noise", "White noise", "Pink noise", "Static", "Hiss",
    "Hum", "Mains hum", "Buzz", "Sine wave", "Chirp tone", "Dial tone", "Beep, bleep", "Clicking", "Tick",
)  # fmt: skip
""""Music" first, then the classes that say an input is not music: speech, silence, noises, hums and test tones."""
GENRE_INDICES: tuple[int, ...] = tuple(AUDIOSET_LABELS.index(name) for name in GENRE_CLASSES)
"""Output indices of :data:`GENRE_CLASSES`."""
MUSIC_INDICES: tuple[int, ...] = tuple(AUDIOSET_LABELS.index(name) for name in MUSIC_CLASSES)
"""Output indices of :data:`MUSIC_CLASSES` (``MUSIC_INDICES[0]`` is "Music")."""

_BN_EPS = 1e-3  # the authors' BatchNorm2d(eps=0.001)

_BLOCKS: tuple[tuple[int, int, int, bool, bool, int], ...] = (
    # kernel, expanded, out, squeeze-excitation, hardswish (else ReLU), stride
    (3, 8, 8, False, False, 1),
    (3, 24, 16, False, False, 2),
    (3, 32, 16, False, False, 1),
    (5, 32, 16, True, False, 2),
    (5, 48, 16, True, False, 1),
    (5, 48, 16, True, False, 1),
    (3, 96, 32, False, True, 2),
    (3, 80, 32, False, True, 1),
    (3, 72, 32, False, True, 1),
    (3, 72, 32, False, True, 1),
    (3, 192, 48, True, True, 1),
    (3, 272, 48, True, True, 1),
    (5, 272, 64, True, True, 2),
    (5, 384, 64, True, True, 1),
    (5, 384, 64, True, True, 1),
)
"""MobileNetV3-Large's 15 blocks at width 0.4 (channels rounded to multiples of 8), as the state dict's shapes give them."""
_STEM_CHANNELS = 8


def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1, activation: type[nn.Module] | None = None) -> nn.Sequential:
    """Conv (no bias, "same" padding) + batch norm (+ activation): keys ``.0`` and ``.1``, as torchvision's Conv2dNormActivation."""
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=(kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out, eps=_BN_EPS),
    ]
    if activation is not None:
        layers.append(activation())
    return nn.Sequential(*layers)


class _ChannelGate(nn.Module):
    """Squeeze-excitation over channels: mean over frequency and time, ReLU bottleneck, sigmoid gate."""

    def __init__(self, channels: int, squeezed: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, squeezed)
        self.fc2 = nn.Linear(squeezed, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean(dim=(2, 3))))))
        return x * gate[:, :, None, None]


class _SqueezeExcitation(nn.Module):
    """The release's concurrent squeeze-excitation with its one (channel) gate; the list keeps its key names."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        squeezed = max(8, (channels // 4 + 4) // 8 * 8)  # a quarter, rounded to a multiple of 8
        self.conc_se_layers = nn.ModuleList([_ChannelGate(channels, squeezed)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conc_se_layers[0](x)


class _InvertedResidual(nn.Module):
    """Expand (1x1, skipped when it would not widen), depthwise k x k, optional squeeze-excitation, project (1x1, linear)."""

    def __init__(self, c_in: int, kernel: int, expanded: int, c_out: int, se: bool, hardswish: bool, stride: int) -> None:
        super().__init__()
        activation = nn.Hardswish if hardswish else nn.ReLU
        layers: list[nn.Module] = []
        if expanded != c_in:
            layers.append(_conv_bn(c_in, expanded, 1, activation=activation))
        layers.append(_conv_bn(expanded, expanded, kernel, stride=stride, groups=expanded, activation=activation))
        if se:
            layers.append(_SqueezeExcitation(expanded))
        layers.append(_conv_bn(expanded, c_out, 1))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return y + x if self.residual else y


class MN04(nn.Module):
    """mn04_as on ``(batch, frames, 128)`` :func:`~genrewiz.features.audioset_log_mel` spectrograms.

    The frames axis is free (10-s patches of :data:`PATCH_FRAMES` in practice); the network
    strides it by 32, so the feature map has ``ceil(frames / 32)`` time steps and 4 frequency rows.
    """

    def __init__(self, n_classes: int = len(AUDIOSET_LABELS)) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn(1, _STEM_CHANNELS, 3, stride=2, activation=nn.Hardswish)]
        channels = _STEM_CHANNELS
        for kernel, expanded, c_out, se, hardswish, stride in _BLOCKS:
            layers.append(_InvertedResidual(channels, kernel, expanded, c_out, se, hardswish, stride))
            channels = c_out
        layers.append(_conv_bn(channels, FEATURE_CHANNELS, 1, activation=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(FEATURE_CHANNELS, EMBEDDING_SIZE),
            nn.Hardswish(),
            nn.Dropout(0.2),
            nn.Linear(EMBEDDING_SIZE, n_classes),
        )

    @classmethod
    def pretrained(cls, path: str | Path = PRETRAINED_WEIGHTS) -> MN04:
        """The shipped mn04_as weights, loaded strictly by name, in eval mode."""
        model = cls()
        safetensors.torch.load_model(model, str(path), strict=True)
        return model.eval()

    def feature_map(self, mel: torch.Tensor) -> torch.Tensor:
        """``(batch, frames, 128)`` -> ``(batch, 384, 4, ceil(frames / 32))``: the last convolution's map (frequency, time)."""
        return self.features(mel.transpose(1, 2).unsqueeze(1))

    def embed_feature_map(self, feature_map: torch.Tensor) -> torch.Tensor:
        """The rest of :meth:`embed` from :meth:`feature_map`'s output: pool, Linear, Hardswish -> ``(batch, 512)``."""
        return self.classifier[:4](feature_map)

    def embed(self, mel: torch.Tensor) -> torch.Tensor:
        """``(batch, frames, 128)`` -> ``(batch, 512)``: the classifier's hidden layer, the ear's embedding."""
        return self.embed_feature_map(self.feature_map(mel))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """AudioSet logits ``(batch, 527)``; their sigmoids are the tagger's probabilities."""
        return self.classifier[4:](self.embed(mel))
