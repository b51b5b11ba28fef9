"""Where the weights come from: a Hub repo, a local checkpoint folder, or the bundled fallback.

Resolution order: the ``source`` argument, else ``$GENREWIZ_MODEL``, else :data:`DEFAULT_REPO_ID`.
A source named in either of the first two ways must load: a mistyped folder or an unreachable
repo is an error, never other weights. Only the default repo, when it cannot be fetched
(offline, ``HF_HUB_OFFLINE=1``, not cached), falls back to the checkpoint shipped inside the
package; one log line says which weights are in use and, for a fallback the user did not choose
(the Hub unreachable), why. Offline mode is a choice: its runs are not told each time why the
Hub was not used.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlparse

from huggingface_hub import constants, is_offline_mode, snapshot_download
from huggingface_hub.errors import HfHubHTTPError

from .checkpoint import CHECKPOINT_FILES, METRICS_FILE

if TYPE_CHECKING:  # torch is imported only when a PyTorch model is built
    from .model import PCRNN

logger = logging.getLogger(__name__)

DEFAULT_REPO_ID = "genrewiz/pcrnn-gtzan"
MODEL_ENV_VAR = "GENREWIZ_MODEL"
BUNDLED_DIR = Path(__file__).with_name("weights")
_PROBE_TIMEOUT = 3.0


@dataclass(frozen=True)
class ModelSource:
    """Which checkpoint was loaded: ``kind`` is ``hub``, ``local`` or ``bundled``."""

    kind: Literal["hub", "local", "bundled"]
    location: str
    directory: Path
    revision: str | None = None
    fallback_reason: str | None = None
    """Why the default repo was not used, when these are the bundled weights in its place."""

    def describe(self) -> str:
        """One human line, e.g. ``Hub genrewiz/pcrnn-gtzan @ 3f2a1c9``."""
        if self.kind == "hub":
            return f"Hub {self.location} @ {(self.revision or '?')[:7]}"
        if self.kind == "bundled":
            why = f", as {self.fallback_reason}" if self.fallback_reason else ""
            return f"bundled weights (genrewiz/weights){why}"
        return f"local checkpoint {self.directory}"

    def metrics(self) -> dict[str, Any] | None:
        """The checkpoint's ``metrics.json`` (its measured accuracy), if it ships one."""
        path = self.directory / METRICS_FILE
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def bundled_source() -> ModelSource:
    """The checkpoint inside the package, usable with no network and no cache."""
    return ModelSource("bundled", "genrewiz", BUNDLED_DIR)


def resolve_source(source: str | os.PathLike[str] | None = None, *, cache_dir: str | Path | None = None) -> ModelSource:
    """Find a checkpoint folder on disk for ``source``, downloading it from the Hub if needed.

    A named source (``source`` or ``$GENREWIZ_MODEL``) must load. It is a local folder when one
    exists there; a path that cannot be a Hub repo id (it starts with ``/``, ``.`` or ``~``, or
    has more than two parts) is a missing folder; anything else is a repo id, which must be
    fetched or in the cache (the error for ``runs/filtred``, whose ``runs/`` exists, says that
    the folder is missing too). Only :data:`DEFAULT_REPO_ID`, named by nobody, falls back to
    :func:`bundled_source`.

    Raises:
        FileNotFoundError: a named source is neither a folder nor a repo that can be fetched.
    """
    named = os.fspath(source or os.environ.get(MODEL_ENV_VAR) or "")
    source = named or DEFAULT_REPO_ID
    path = Path(source).expanduser()
    if path.is_dir():
        return ModelSource("local", source, path.resolve())
    if named and _is_local_path(source):
        raise FileNotFoundError(f"model folder not found: {source}")
    chosen_offline = is_offline_mode()
    offline = chosen_offline or not _hub_reachable()
    try:
        directory = Path(
            snapshot_download(source, cache_dir=cache_dir, allow_patterns=list(CHECKPOINT_FILES), local_files_only=offline)
        )
    except (OSError, HfHubHTTPError, ValueError) as err:
        not_cached = offline and isinstance(err, OSError)
        why = "the Hub is unreachable or offline mode is on, and it is not in the local cache" if not_cached else _first_line(err)
        if named and Path(path.parts[0]).is_dir():
            raise FileNotFoundError(f"model folder not found: {source} (nor could a Hub repo of that name be fetched: {why})") from err
        if named:
            raise FileNotFoundError(f"model {source} is not a local folder and could not be fetched from the Hub: {why}") from err
        if chosen_offline:
            return bundled_source()
        return dataclasses.replace(bundled_source(), fallback_reason=f"{source} could not be fetched from the Hub: {why}")
    return ModelSource("hub", source, directory, revision=directory.name)


def _is_local_path(source: str) -> bool:
    """Whether ``source`` can only be meant as a folder: never a valid ``owner/name`` Hub repo id."""
    return source.startswith(("/", ".", "~")) or len(Path(source).parts) > 2


def _first_line(err: Exception) -> str:
    """An exception's message without the request details the Hub client appends on later lines."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def load_model(
    source: str | os.PathLike[str] | None = None, *, cache_dir: str | Path | None = None
) -> tuple[PCRNN, ModelSource]:
    """Resolve ``source`` (see :func:`resolve_source`) and load it strictly, in eval mode."""
    from .model import PCRNN

    resolved = resolve_source(source, cache_dir=cache_dir)
    model = PCRNN.from_pretrained(resolved.directory)
    logger.info("GenreWiz weights: %s", resolved.describe())
    return model, resolved


def _hub_reachable() -> bool:
    """Whether the Hub endpoint accepts a TCP connection within a few seconds.

    Without this, ``huggingface_hub`` retries each file for many seconds before reporting an
    unreachable network; probing first lets an offline start fall back to the cache at once.
    """
    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "", port), timeout=_PROBE_TIMEOUT).close()
    except OSError:
        return False
    return True
