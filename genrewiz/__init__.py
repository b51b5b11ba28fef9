"""GenreWiz: music genre classification with a parallel CNN-RNN (PCRNN) over log-mel windows.

The names below are imported on first use (PEP 562), so that ``genrewiz predict`` does not
pay for torch when ONNX Runtime serves, and ``import genrewiz`` stays instant.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "AudioError": ".audio",
    "load_audio": ".audio",
    "FeatureConfig": ".features",
    "log_mel": ".features",
    "make_windows": ".features",
    "DEFAULT_REPO_ID": ".hub",
    "ModelSource": ".hub",
    "load_model": ".hub",
    "GTZAN_GENRES": ".model",
    "PCRNN": ".model",
    "GenreClassifier": ".predict",
    "Prediction": ".predict",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .audio import AudioError, load_audio
    from .features import FeatureConfig, log_mel, make_windows
    from .hub import DEFAULT_REPO_ID, ModelSource, load_model
    from .model import GTZAN_GENRES, PCRNN
    from .predict import GenreClassifier, Prediction


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'genrewiz' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
