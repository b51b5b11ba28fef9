"""The pretrained CNN branch: musicnn (Pons and Serra, 2019), ported from TensorFlow to PyTorch.

:class:`MusiCNN` is the ``MSD_musicnn`` tagger of the ``musicnn`` package, layer for layer: a
musically motivated front end (timbral filters spanning 40 % and 70 % of the mel axis, temporal
filters of 32/64/128 frames), a dense residual mid end, and mean/max pooling over time into a
200-unit penultimate layer, trained on the Million Song Dataset's 50 most common tags. Its
weights come from the ``musicnn`` wheel on PyPI (ISC licence), converted once by
``train/convert_musicnn.py`` into ``genrewiz/pretrained/msd_musicnn.safetensors``.

:class:`MusicnnBranch` is the PCRNN's CNN branch built on it: a window is cut into the 3-second
patches musicnn was trained on, each patch becomes its penultimate embedding, and the patches
are pooled (mean and max) into one vector per window.
"""

from __future__ import annotations

from pathlib import Path
from collections.abc import Sequence
from typing import TYPE_CHECKING

import safetensors.torch
import torch
import torch.nn.functional as F
from torch import nn

from .features import FeatureConfig

if TYPE_CHECKING:
    from .model import PCRNN

PATCH_FRAMES = 187
"""Frames per musicnn input patch: 3 s at 16 kHz with a hop of 256 samples."""
EMBEDDING_SIZE = 200
"""Units of musicnn's penultimate layer: what one patch becomes."""
PRETRAINED_WEIGHTS = Path(__file__).with_name("pretrained") / "msd_musicnn.safetensors"
"""The converted MSD_musicnn weights shipped in the package (see ``genrewiz/pretrained/README.md``)."""
MSD_TAGS: tuple[str, ...] = (
    "rock", "pop", "alternative", "indie", "electronic", "female vocalists", "dance", "00s", "alternative rock",
    "jazz", "beautiful", "metal", "chillout", "male vocalists", "classic rock", "soul", "indie rock", "Mellow",
    "electronica", "80s", "folk", "90s", "chill", "instrumental", "punk", "oldies", "blues", "hard rock", "ambient",
    "acoustic", "experimental", "female vocalist", "guitar", "Hip-Hop", "70s", "party", "country", "easy listening",
    "sexy", "catchy", "funk", "electro", "heavy metal", "Progressive rock", "60s", "rnb", "indie pop", "sad", "House",
    "happy",
)  # fmt: skip
"""musicnn's MSD tag vocabulary, in the order of its 50 outputs."""

TAG_EVIDENCE: dict[str, tuple[str, ...]] = {
    "rock": ("rock", "classic rock", "hard rock"),
    "metal": ("metal", "heavy metal"),
}
"""Genres on which the MSD tagger's own judgement joins the genre layer's, and the tags that speak for each.

GTZAN's labels teach that loud, modern-mastered guitar music is metal (its rock is mostly of the
1960s-70s); the tagger, trained on a million songs' Last.fm tags, tells rock from metal."""

MUSICNN_FEATURES = FeatureConfig(
    sample_rate=16_000,
    n_fft=512,
    hop_length=256,
    n_mels=96,
    scale="logc",
    window_frames=10 * PATCH_FRAMES,
    window_hop_frames=5 * PATCH_FRAMES,
)
"""musicnn's front end (16 kHz, 512-point FFT, hop 256, 96 mels, ``log10(1 + 10000 * power)``),
in windows of ten 3-second patches (29.9 s, one GTZAN clip) with 50 % overlap."""

_BN_EPS = 1e-3  # tf.compat.v1.layers.batch_normalization's default


def _bn(channels: int) -> nn.BatchNorm1d:
    return nn.BatchNorm1d(channels, eps=_BN_EPS)


class MusiCNN(nn.Module):
    """musicnn's MSD tagger on ``(batch, 187, 96)`` log-compressed mel patches.

    Convolutions over the whole (remaining) frequency axis are written as ``Conv1d`` over time,
    which is what they are; the timbral filters, which slide along frequency too, stay ``Conv2d``.
    """

    def __init__(self, n_mels: int = 96, n_tags: int = len(MSD_TAGS)) -> None:
        super().__init__()
        self.input_bn = nn.BatchNorm2d(1, eps=_BN_EPS)
        self.timbral = nn.ModuleList(
            nn.Conv2d(1, 204, kernel_size=(7, int(share * n_mels))) for share in (0.4, 0.7)
        )
        self.timbral_bn = nn.ModuleList(nn.BatchNorm2d(204, eps=_BN_EPS) for _ in range(2))
        self.temporal = nn.ModuleList(nn.Conv2d(1, 51, kernel_size=(length, 1)) for length in (128, 64, 32))
        self.temporal_bn = nn.ModuleList(nn.BatchNorm2d(51, eps=_BN_EPS) for _ in range(3))
        frontend = 2 * 204 + 3 * 51
        self.midend = nn.ModuleList(nn.Conv1d(c, 64, kernel_size=7) for c in (frontend, 64, 64))
        self.midend_bn = nn.ModuleList(_bn(64) for _ in range(3))
        self.pool_bn = _bn(2 * (frontend + 3 * 64))
        self.penultimate = nn.Linear(2 * (frontend + 3 * 64), EMBEDDING_SIZE)
        self.penultimate_bn = _bn(EMBEDDING_SIZE)
        self.tags = nn.Linear(EMBEDDING_SIZE, n_tags)

    def frontend_maps(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, frames, mels)`` -> ``(batch, 561, frames)``: each filter's maximum over frequency."""
        x = self.input_bn(x.unsqueeze(1))
        maps = []
        padded = F.pad(x, (0, 0, 3, 3))
        for conv, bn in zip(self.timbral, self.timbral_bn):
            maps.append(bn(F.relu(conv(padded))).amax(dim=3))
        for conv, bn in zip(self.temporal, self.temporal_bn):
            length = conv.kernel_size[0]
            same = F.pad(x, (0, 0, (length - 1) // 2, length // 2))  # TensorFlow's "same" for even kernels
            maps.append(bn(F.relu(conv(same))).amax(dim=3))
        return torch.cat(maps, dim=1)

    def midend_maps(self, frontend: torch.Tensor) -> torch.Tensor:
        """Three residual Conv1d layers; returns front end and all three outputs stacked: ``(batch, 753, frames)``."""
        outputs = [frontend]
        x = frontend
        for i, (conv, bn) in enumerate(zip(self.midend, self.midend_bn)):
            y = bn(F.relu(conv(F.pad(x, (3, 3)))))
            x = y if i == 0 else y + x
            outputs.append(x)
        return torch.cat(outputs, dim=1)

    def embed(self, patches: torch.Tensor) -> torch.Tensor:
        """``(batch, 187, 96)`` patches -> ``(batch, 200)`` penultimate embeddings (musicnn's ``penultimate``)."""
        return self.embed_frontend(self.frontend_maps(patches))

    def embed_frontend(self, frontend: torch.Tensor) -> torch.Tensor:
        """The rest of :meth:`embed` from :meth:`frontend_maps`' output (the export rewrites the front end only)."""
        features = self.midend_maps(frontend)
        pooled = torch.stack([features.amax(dim=2), features.mean(dim=2)], dim=2).flatten(1)  # TF's [max, mean] interleave
        return self.penultimate_bn(F.relu(self.penultimate(self.pool_bn(pooled))))

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """Tag logits ``(batch, 50)`` (sigmoid gives musicnn's taggram)."""
        return self.tags(self.embed(patches))


class MusicnnBranch(nn.Module):
    """The PCRNN's CNN branch: musicnn embeddings of a window's 3-s patches, mean- and max-pooled, standardised.

    ``frozen`` (the default) keeps the pretrained trunk fixed, in eval mode and without
    gradients, so its patch embeddings can be computed once per clip and cached for training.
    """

    def __init__(self, features: FeatureConfig, frozen: bool = True, labels: Sequence[str] = ()) -> None:
        super().__init__()
        front_end = ("sample_rate", "n_fft", "hop_length", "n_mels", "scale", "fmin", "fmax")
        mismatched = [k for k in front_end if getattr(features, k) != getattr(MUSICNN_FEATURES, k)]
        if mismatched:
            raise ValueError(f"the musicnn branch needs musicnn's front end; these FeatureConfig fields differ: {mismatched}")
        if features.window_frames < PATCH_FRAMES:
            raise ValueError(f"the musicnn branch needs windows of at least {PATCH_FRAMES} frames")
        self.trunk = MusiCNN(features.n_mels)
        self.patches = features.window_frames // PATCH_FRAMES
        self.out_features = 2 * EMBEDDING_SIZE
        self.norm = nn.BatchNorm1d(self.out_features)
        evidence = torch.zeros(len(labels), len(MSD_TAGS))
        for row, label in enumerate(labels):
            for tag in TAG_EVIDENCE.get(label, ()):
                evidence[row, MSD_TAGS.index(tag)] = 1.0
        self.register_buffer("evidence", evidence, persistent=False)
        self.evidence_features = len(labels)
        self.frozen = frozen
        if frozen:
            self.trunk.requires_grad_(False)
            self.trunk.eval()

    def load_pretrained(self, path: str | Path = PRETRAINED_WEIGHTS) -> None:
        """Load the converted MSD_musicnn weights into the trunk (strictly)."""
        safetensors.torch.load_model(self.trunk, str(path), strict=True)

    def unfreeze(self) -> None:
        """Let the trunk train too (fine-tuning): gradients on, batch-norm statistics updated."""
        self.frozen = False
        self.trunk.requires_grad_(True)

    def view_shifts(self, n: int) -> list[int]:
        """``n`` circular shifts of a window that give distinct 3-s patch grids: a frozen branch's training views."""
        return [v * PATCH_FRAMES // n for v in range(n)]

    def train(self, mode: bool = True) -> MusicnnBranch:
        """Keep a frozen trunk in eval mode (batch-norm statistics fixed) while the rest trains."""
        super().train(mode)
        if self.frozen:
            self.trunk.eval()
        return self

    def patch_embeddings(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, 1, frames, mels)`` windows -> ``(batch, patches, 200)``: one embedding per 3-s patch."""
        batch = x.shape[0]
        patches = x[:, 0, : self.patches * PATCH_FRAMES].reshape(batch * self.patches, PATCH_FRAMES, x.shape[-1])
        return self.trunk.embed(patches).view(batch, self.patches, EMBEDDING_SIZE)

    def pool(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``(batch, patches, 200)`` -> ``(batch, 400)``: mean and max over the window's patches, standardised.

        The batch norm (trained with the head, not part of the frozen trunk) puts mean- and
        max-pooled features on one scale, so weight decay on the linear layer treats them alike.
        """
        pooled = self.norm(torch.cat([embeddings.mean(dim=1), embeddings.amax(dim=1)], dim=1))
        if not self.evidence_features:
            return pooled
        return torch.cat([pooled, self.tag_evidence(embeddings)], dim=1)

    def tag_evidence(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``(batch, patches, 200)`` -> ``(batch, labels)``: the tagger's log-odds among the :data:`TAG_EVIDENCE` genres.

        Each such genre scores its strongest tag (sigmoid, mean over the window's patches); the
        log scores are centred over those genres, so the evidence only moves belief between
        them, and every other genre gets 0.
        """
        tags = torch.sigmoid(self.trunk.tags(embeddings)).mean(dim=1)
        scores = (tags.unsqueeze(1) * self.evidence).amax(dim=2).clamp_min(1e-6).log()
        has = self.evidence.amax(dim=1)
        centred = scores - (scores * has).sum(dim=1, keepdim=True) / has.sum().clamp_min(1.0)
        return centred * has

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.patch_embeddings(x))


def logits_from_embeddings(
    pcrnn: PCRNN, embeddings: torch.Tensor, x: torch.Tensor, ear: torch.Tensor | None = None
) -> torch.Tensor:
    """A musicnn PCRNN's logits from its windows' patch embeddings ``(n, patches, 200)``, the windows and (with the AudioSet ear) its patch summaries.

    ``pcrnn(x, ear_patches)`` split after the pretrained networks: the one place both engines'
    head stage (and the ONNX export) go through, so a change to the pooling or the head reaches all of them.
    """
    return pcrnn.logits_from_cnn(pcrnn.cnn.pool(embeddings), x, ear)
