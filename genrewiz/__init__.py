"""GenreWiz: music genre classification with a parallel CNN-RNN (PCRNN) over log-mel windows."""

from .audio import AudioError, load_audio
from .features import FeatureConfig, log_mel, make_windows
from .hub import DEFAULT_REPO_ID, ModelSource, load_model
from .model import GTZAN_GENRES, PCRNN
from .predict import GenreClassifier, Prediction

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_REPO_ID",
    "GTZAN_GENRES",
    "PCRNN",
    "AudioError",
    "FeatureConfig",
    "GenreClassifier",
    "ModelSource",
    "Prediction",
    "load_audio",
    "load_model",
    "log_mel",
    "make_windows",
]
