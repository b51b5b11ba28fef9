"""The PCRNN's second pretrained ear: EfficientAT's mn04 AudioSet tagger (:mod:`genrewiz.mn04`).

musicnn learnt from the Million Song Dataset's tags; mn04 from AudioSet, two million YouTube
clips of music (and everything else) as it is uploaded today. :class:`AudioSetBranch` hears each
model window as a few 10-s patches (the length mn04 was trained on; how many is a setting of
:class:`~genrewiz.features.AudioSetFeatures`) and gives the head three things, each the mean over the window's patches:

- its 512-unit hidden layer, standardised (what the genre layer learns from);
- its own AudioSet genre logits, in the checkpoint's label order: a zero-shot opinion that the
  PCRNN adds as a prior (``audioset_prior``), so what AudioSet knows of today's music is kept
  whatever the small genre training set teaches;
- the logits of the classes that tell music from what is not (:data:`~genrewiz.mn04.MUSIC_CLASSES`), which a
  calibrated logistic layer (:attr:`AudioSetBranch.music`) turns into the probability that the
  window is music at all.

Imports torch and the package's own model parts only.
"""

from __future__ import annotations

from collections.abc import Sequence

import safetensors.torch
import torch
from torch import nn

from .mn04 import AUDIOSET_LABELS, EMBEDDING_SIZE, GENRE_CLASSES, MN04, MUSIC_CLASSES, PRETRAINED_WEIGHTS

AUDIOSET_GENRES: dict[str, str] = dict(zip(
    ("blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock"), GENRE_CLASSES))
"""GenreWiz's genre names -> AudioSet's class for each."""


class AudioSetBranch(nn.Module):
    """mn04 over a window's 10-s patches: standardised hidden features, a genre prior and a music score.

    ``frozen`` (the default) keeps the pretrained tagger fixed and in eval mode, so training can
    cache what it says of every clip. ``labels`` must all be genres AudioSet has a class for
    (:data:`AUDIOSET_GENRES`).
    """

    def __init__(self, labels: Sequence[str], frozen: bool = True) -> None:
        super().__init__()
        unknown = [label for label in labels if label not in AUDIOSET_GENRES]
        if unknown:
            raise ValueError(f"the AudioSet ear has no class for {unknown}; it knows {sorted(AUDIOSET_GENRES)}")
        self.trunk = MN04()
        self.register_buffer("genre_index", torch.tensor([AUDIOSET_LABELS.index(AUDIOSET_GENRES[g]) for g in labels]),
                             persistent=False)
        self.register_buffer("music_index", torch.tensor([AUDIOSET_LABELS.index(c) for c in MUSIC_CLASSES]),
                             persistent=False)
        self.n_labels = len(labels)
        self.out_features = EMBEDDING_SIZE
        self.summary_size = EMBEDDING_SIZE + self.n_labels + len(MUSIC_CLASSES)
        self.norm = nn.BatchNorm1d(EMBEDDING_SIZE)
        self.music = nn.Linear(len(MUSIC_CLASSES), 1)
        """Logistic regression over the music-evidence logits, fitted by ``train/music.py`` (not by the genre loss)."""
        self.frozen = frozen
        if frozen:
            self.trunk.requires_grad_(False)
            self.trunk.eval()

    def load_pretrained(self, path: str = str(PRETRAINED_WEIGHTS)) -> None:
        """Load the converted mn04 weights into the tagger (strictly)."""
        safetensors.torch.load_model(self.trunk, path, strict=True)

    def train(self, mode: bool = True) -> AudioSetBranch:
        """Keep a frozen tagger in eval mode (batch-norm statistics fixed) while the rest trains."""
        super().train(mode)
        if self.frozen:
            self.trunk.eval()
        return self

    def patch_summaries(self, patches: torch.Tensor) -> torch.Tensor:
        """``(p, frames, mels)`` 10-s patches -> ``(p, summary_size)``: hidden units, genre logits, music-evidence logits."""
        hidden = self.trunk.embed(patches)
        logits = self.trunk.classifier[4:](hidden)
        return torch.cat([hidden, logits[:, self.genre_index], logits[:, self.music_index]], dim=1)

    def split(self, summaries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(n, patches, summary_size)`` -> the window means of hidden units, genre logits and music-evidence logits."""
        mean = summaries.mean(dim=1)
        genres = EMBEDDING_SIZE + self.n_labels
        return mean[:, :EMBEDDING_SIZE], mean[:, EMBEDDING_SIZE:genres], mean[:, genres:]

    def features(self, summaries: torch.Tensor) -> torch.Tensor:
        """The standardised hidden units of each window: the genre layer's input from this ear."""
        return self.norm(self.split(summaries)[0])

    def prior(self, summaries: torch.Tensor) -> torch.Tensor:
        """AudioSet's own genre judgement as log-probabilities over the labels (a softmax of its genre logits)."""
        return torch.log_softmax(self.split(summaries)[1], dim=1)

    def music_logits(self, summaries: torch.Tensor) -> torch.Tensor:
        """``(n,)`` log-odds that each window is music."""
        return self.music(self.split(summaries)[2]).squeeze(1)
