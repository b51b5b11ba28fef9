"""``genrewiz predict --ray``: the CLI's rows, computed by Ray Data on one machine or a cluster.

The pipeline is Ray's own batch inference, not a home-made scheduler:

1. the driver lists the inputs (local files and folders as the CLI finds them, URIs through
   ``pyarrow.fs``: ``s3://``, ``gs://``, ``hdfs://``, ``file://``...);
2. CPU tasks decode each file and compute its log-mel (:func:`genrewiz.predict.analyse`), a
   few files per task; a file that cannot be read becomes an error row, never a failed job;
3. an actor pool runs the model (``map_batches``): each actor loads the checkpoint once, from
   the files the driver resolved and shipped with it, so every actor uses the very weights the
   driver logged, with no Hub access or shared disk needed on the workers;
4. the rows (the JSON rows of ``genrewiz predict``: path, ok, duration_s, top, error, size,
   mtime) are written as Parquet or JSON Lines files under a new folder or URI.

A new local instance (no ``--ray ADDRESS``, no ``$RAY_ADDRESS``, no cluster started here by
``ray start``) runs no dashboard and requires a token that lives only in this process's
environment and its Ray workers': nothing else on the network can submit work to it, and no
``~/.ray/auth_token`` is left behind to break later connections to a cluster that runs without
tokens. Ray's own gRPC servers still listen on every interface: Ray 2.60 has no setting for
that (it turns a ``127.0.0.1`` node address into the machine's own), which is what the token
is for, and one log line says so when such an instance starts, with the way to stay on this
machine (the CLI's own workers).

Imported only for ``--ray``: the app and the plain CLI never need Ray (``pip install genrewiz[ray]``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import ray
import ray.data
from ray.data import ActorPoolStrategy
from ray.exceptions import AuthenticationError
from threadpoolctl import threadpool_limits

from .audio import DEFAULT_MAX_DURATION, SUPPORTED_EXTENSIONS, AudioError, find_audio_files, unreadable_reason
from .checkpoint import MODEL_FILES
from .features import AudioSetFeatures, FeatureConfig
from .output import NOT_MUSIC, Summary
from .predict import Analysis, GenreClassifier, analyse
from .results import Row
from .verdict import is_music

ROW_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("ok", pa.bool_()),
        ("duration_s", pa.float64()),
        ("top", pa.list_(pa.struct([("label", pa.string()), ("confidence", pa.float64())]))),
        ("music", pa.float64()),
        ("error", pa.string()),
        ("size", pa.int64()),
        ("mtime", pa.float64()),
    ]
)
"""One result row, the same fields as a ``genrewiz predict --format jsonl`` line."""
_ANALYSIS_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("mel", pa.large_binary()),
        ("frames", pa.int64()),
        ("ear_mel", pa.large_binary()),
        ("ear_frames", pa.int64()),
        ("duration", pa.float64()),
        ("source_duration", pa.float64()),
        ("error", pa.string()),
        ("size", pa.int64()),
        ("mtime", pa.float64()),
    ]
)
"""Between the decoding tasks and the model actors: the log-mels (the AudioSet ear's too, if any) as raw float32 bytes."""
logger = logging.getLogger(__name__)
DECODE_CPUS = 0.5
"""CPU share of one decoding task (a model actor takes 1: one torch thread). The actors together
always leave at least this much of the cluster free, or decoding could never start."""
AUTH_VARIABLES = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
"""Ray's token-authentication settings; a user who sets any of them decides for every connection."""
_AUTH_HINT = (
    "if the cluster runs without token authentication, set RAY_AUTH_MODE=disabled; if it runs with it, "
    "RAY_AUTH_TOKEN (or the file ~/.ray/auth_token) must hold the cluster's token"
)


def list_inputs(paths_or_uris: Iterable[str]) -> list[str]:
    """Every audio file under the inputs: absolute local paths (folders searched as the CLI does) and URIs.

    A URI is anything with ``://`` that ``pyarrow.fs`` reads; a URI folder is listed
    recursively for the extensions GenreWiz decodes. An input that does not exist is kept, so
    that it becomes an error row. Local paths must exist on every node (a shared disk).
    """
    found: list[str] = []
    for item in paths_or_uris:
        if "://" not in item:
            found += [str(path) for path in find_audio_files([os.path.abspath(item)])]
            continue
        filesystem, root = pafs.FileSystem.from_uri(item)
        if filesystem.get_file_info(root).type != pafs.FileType.Directory:
            found.append(item)
            continue
        prefix = item.rstrip("/")[: -len(root.rstrip("/"))] if item.rstrip("/").endswith(root.rstrip("/")) else ""
        infos = filesystem.get_file_info(pafs.FileSelector(root, recursive=True))
        found += sorted(
            prefix + info.path
            for info in infos
            if info.type == pafs.FileType.File and PurePosixPath(info.path).suffix.lower() in SUPPORTED_EXTENSIONS
        )
    return found


def predict_dataset(
    paths_or_uris: Sequence[str],
    model: str | None = None,
    *,
    top: int = 3,
    max_duration: float = DEFAULT_MAX_DURATION,
    actors: int | None = None,
    files_per_task: int = 8,
) -> ray.data.Dataset:
    """A lazy Ray Dataset of result rows (:data:`ROW_SCHEMA`) for the audio files under ``paths_or_uris``.

    The checkpoint (``model``, resolved as everywhere in GenreWiz) is loaded once on the driver,
    which checks it and logs which weights are in use; its files are what the actors load.
    ``actors`` fixes the number of model replicas; by default the pool grows from 1 to
    :func:`max_actors` as the queue of decoded songs asks for it. Write the result with
    ``.write_parquet(...)``, iterate it, or hand it to more Ray Data steps.

    Raises:
        ValueError: no audio file was found, or ``actors`` would leave no CPU for decoding.
        OSError, RuntimeError: the model cannot be loaded.
    """
    files = list_inputs(paths_or_uris)
    if not files:
        raise ValueError("no audio files found in " + ", ".join(paths_or_uris))
    most = max_actors()
    if actors is not None and actors > most:
        raise ValueError(
            f"--actors {actors} would hold every CPU of this Ray cluster ({_cluster_cpus():g}), leaving none to decode "
            f"the files: use at most {most}"
        )
    classifier = GenreClassifier.from_pretrained(model, max_duration=max_duration)
    items = [_item(path) for path in files]
    dataset = ray.data.from_items(items, override_num_blocks=-(-len(files) // files_per_task))
    folder = classifier.source.directory
    # What an actor needs to rebuild the driver's model: model.onnx too where the checkpoint has one,
    # so that actors serve with ONNX Runtime as the driver does.
    checkpoint = {name: (folder / name).read_bytes() for name in MODEL_FILES if (folder / name).is_file()}
    pool = ActorPoolStrategy(size=actors) if actors else ActorPoolStrategy(min_size=1, max_size=most)
    # Different CPU shares keep Ray from fusing decoding into the actors, where it would run
    # one file at a time per model; two decoding tasks per core keep a core busy while a
    # file is read, as the CLI's worker processes do.
    return dataset.map_batches(
        _analyse_batch,
        batch_format="pyarrow",
        fn_kwargs={"config": classifier.config, "max_duration": max_duration, "ear": classifier.audioset_config},
        num_cpus=DECODE_CPUS,
    ).map_batches(
        _Classify,
        batch_format="pyarrow",
        batch_size=files_per_task,
        compute=pool,
        num_cpus=1,
        fn_constructor_kwargs={"checkpoint": checkpoint, "top": min(top, len(classifier.labels))},
    )


def predict_to(
    paths_or_uris: Sequence[str],
    output: str,
    *,
    fmt: str = "parquet",
    address: str | None = None,
    model: str | None = None,
    top: int = 3,
    max_duration: float = DEFAULT_MAX_DURATION,
    actors: int | None = None,
    quiet: bool = False,
    summary: Summary | None = None,
) -> Summary:
    """Classify ``paths_or_uris`` on Ray and write the rows as ``fmt`` (parquet or jsonl) files under ``output``.

    Connects to the cluster at ``address`` (else ``$RAY_ADDRESS``, a cluster started here by
    ``ray start``, else a new local instance) unless Ray is already initialised. ``output`` (a folder or URI) must not exist
    yet: results are never mixed with an older run's. Returns the run's :class:`~genrewiz.output.Summary`
    (files, failures, top genres), read back from the written rows: ``summary`` if given, whose
    clock then started when the caller made it.

    Raises:
        ValueError: ``output`` exists, or no audio file was found.
        OSError, RuntimeError: the model cannot be loaded.
    """
    out_fs, out_path = pafs.FileSystem.from_uri(output if "://" in output else os.path.abspath(output))
    if out_fs.get_file_info(out_path).type != pafs.FileType.NotFound:
        raise ValueError(f"{output} already exists: give --output a new folder or URI")
    if quiet:  # Ray's start-up notes, Ray Data's plan and progress lines
        for name in ("ray", "ray.data"):
            logging.getLogger(name).setLevel(logging.ERROR)
        ray.data.DataContext.get_current().enable_progress_bars = False
    if not ray.is_initialized():
        connect(address, quiet=quiet)
    dataset = predict_dataset(paths_or_uris, model, top=top, max_duration=max_duration, actors=actors)
    if fmt == "parquet":
        dataset.write_parquet(out_path, filesystem=out_fs)
    else:
        dataset.write_json(out_path, filesystem=out_fs, double_precision=15)
    return _count(out_fs, out_path, fmt, summary if summary is not None else Summary())


def connect(address: str | None = None, *, quiet: bool = False, num_cpus: int | None = None) -> None:
    """Join the Ray cluster at ``address`` (else ``$RAY_ADDRESS``, else one started here by ``ray start``), or start a local one.

    A local instance is started as the module docstring says: no dashboard, a token of its own
    (unless the user set Ray's ``RAY_AUTH_*`` variables).

    Raises:
        RuntimeError: the cluster cannot be reached or refused us, with what to check.
    """
    settings = {"logging_level": logging.ERROR if quiet else logging.INFO, "log_to_driver": not quiet}
    target = address or os.environ.get("RAY_ADDRESS") or ("auto" if _started_here() else "local")
    if target != "local":
        try:
            ray.init(address=target, **settings)
        except (ConnectionError, AuthenticationError, RuntimeError) as err:
            raise RuntimeError(f"cannot connect to the Ray cluster at {target}: {_first_line(err)} ({_AUTH_HINT})") from err
        return
    own_token = not any(name in os.environ for name in AUTH_VARIABLES)
    logger.info(
        "Ray: no cluster address, so a local Ray instance starts; it listens on this machine's network, not only "
        "127.0.0.1 (Ray cannot be bound to loopback), %s. To keep everything on this machine, run genrewiz predict "
        "without --ray: its own worker processes (--jobs N).",
        "and admits only clients holding its token (token authentication)" if own_token else "with the RAY_AUTH_* settings you gave",
    )
    if own_token:
        os.environ["RAY_AUTH_MODE"] = "token"
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
        from ray._raylet import Config

        Config.initialize("")  # this process read Ray's settings at import: re-read them, as Ray does when it turns tokens on
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, **settings)


def _started_here() -> bool:
    """Whether ``ray start`` left the address of a running cluster on this machine (Ray's own bookkeeping)."""
    from ray._private.utils import read_ray_address  # what ray.init(address=None) itself consults

    return bool(read_ray_address()) and bool(ray._private.services.find_gcs_addresses())


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _cluster_cpus() -> float:
    """CPUs Ray can schedule on."""
    return float(ray.cluster_resources().get("CPU", 1))


def max_actors() -> int:
    """Model replicas the cluster can hold while :data:`DECODE_CPUS` stays free for decoding (at least 1).

    Raises:
        ValueError: the cluster has too few CPUs for one actor and one decoding task.
    """
    cpus = _cluster_cpus()
    if cpus < 1 + DECODE_CPUS:
        raise ValueError(f"this Ray cluster has {cpus:g} CPU; GenreWiz needs {1 + DECODE_CPUS:g} (one model, one decoding task)")
    return int(cpus - DECODE_CPUS)


def _item(path: str) -> dict[str, str | None]:
    """The dataset row of one input: its path, as Arrow can hold it, and why it cannot be read, if so.

    Arrow strings are UTF-8, so a file name that is not (a Latin-1 ``caf\\xe9.wav``) is shown
    with its odd bytes escaped and becomes an error row instead of failing the whole job.
    """
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(path).decode("utf-8", "backslashreplace")
        return {"path": shown, "name_error": f"{PurePosixPath(shown).name}: the file name is not valid UTF-8, which Ray Data "
                "cannot carry: rename it, or analyse it with genrewiz predict without --ray"}
    return {"path": path, "name_error": None}


def _analyse_batch(batch: pa.Table, config: FeatureConfig, max_duration: float, ear: AudioSetFeatures | None) -> pa.Table:
    """Ray task: decode and compute the log-mel of each file in ``batch``, or its error (one BLAS thread, as the CLI's workers)."""
    paths, name_errors = batch.column("path").to_pylist(), batch.column("name_error").to_pylist()
    with threadpool_limits(1):
        rows = [
            _analyse_one(path, config, max_duration, ear) if error is None else _error_row(path, error)
            for path, error in zip(paths, name_errors, strict=True)
        ]
    return pa.Table.from_pylist(rows, schema=_ANALYSIS_SCHEMA)


def _error_row(path: str, error: str | None) -> dict:
    """An :data:`_ANALYSIS_SCHEMA` row with nothing analysed (yet), for ``path``."""
    return {"path": path, "mel": None, "frames": None, "ear_mel": None, "ear_frames": None, "duration": None,
            "source_duration": None, "error": error, "size": None, "mtime": None}


def _analyse_one(path: str, config: FeatureConfig, max_duration: float, ear: AudioSetFeatures | None) -> dict:
    """One file's :data:`_ANALYSIS_SCHEMA` row; a URI is copied to a local temporary file first."""
    row = _error_row(path, None)
    if "://" not in path and (reason := unreadable_reason(path)) is not None:
        row["error"] = reason
        return row
    try:
        if "://" in path:
            row["size"], row["mtime"], analysis = _analyse_uri(path, config, max_duration, ear)
        else:
            with contextlib.suppress(OSError):
                stat = os.stat(path)
                row["size"], row["mtime"] = stat.st_size, stat.st_mtime
            analysis = analyse(path, config, max_duration=max_duration, ear=ear)
    except AudioError as err:
        row["error"] = str(err)
        return row
    mel = np.ascontiguousarray(analysis.mel, dtype=np.float32)
    row.update(mel=mel.tobytes(), frames=len(mel), duration=analysis.duration, source_duration=analysis.source_duration)
    if analysis.ear_mel is not None:
        ear_mel = np.ascontiguousarray(analysis.ear_mel, dtype=np.float32)
        row.update(ear_mel=ear_mel.tobytes(), ear_frames=len(ear_mel))
    return row


def _analyse_uri(
    uri: str, config: FeatureConfig, max_duration: float, ear: AudioSetFeatures | None
) -> tuple[int | None, float | None, Analysis]:
    """Size, mtime and analysis of a file ``pyarrow.fs`` reads, through a temporary copy under its own name.

    Raises:
        AudioError: the file is missing or unreadable, with the messages a local file gets.
    """
    name = PurePosixPath(uri.split("?")[0]).name
    try:
        filesystem, path = pafs.FileSystem.from_uri(uri)
        info = filesystem.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise AudioError(f"{name}: file not found")
        if info.type != pafs.FileType.File:
            raise AudioError(f"{name}: not a file")
        with tempfile.TemporaryDirectory(prefix="genrewiz-") as folder:
            local = Path(folder) / name
            with filesystem.open_input_stream(path) as source, open(local, "wb") as copy:
                shutil.copyfileobj(source, copy, length=1 << 20)
            analysis = analyse(local, config, max_duration=max_duration, ear=ear)
    except (OSError, pa.ArrowException) as err:
        raise AudioError(f"{name}: cannot read: {err}") from err
    return info.size, None if info.mtime_ns is None else info.mtime_ns / 1e9, analysis


class _Classify:
    """Ray actor: one model, loaded once from the driver's checkpoint files, for every batch it is given."""

    def __init__(self, checkpoint: dict[str, bytes], top: int) -> None:
        with tempfile.TemporaryDirectory(prefix="genrewiz-checkpoint-") as folder:
            for name, data in checkpoint.items():
                (Path(folder) / name).write_bytes(data)
            self.classifier = GenreClassifier.from_pretrained(folder)
        self.top = top

    def __call__(self, batch: pa.Table) -> pa.Table:
        return pa.Table.from_pylist([self._row(item).to_json() for item in batch.to_pylist()], schema=ROW_SCHEMA)

    def _row(self, item: dict) -> Row:
        """The :class:`~genrewiz.results.Row` of one analysed (or failed) file, as the CLI makes it."""
        stat = {"size": item["size"], "mtime": item["mtime"]}
        if item["error"] is not None:
            return Row(item["path"], [], error=item["error"], **stat)
        mel = np.frombuffer(item["mel"], dtype=np.float32).reshape(item["frames"], self.classifier.config.n_mels)
        ear = self.classifier.audioset_config
        ear_mel = None if ear is None else np.frombuffer(item["ear_mel"], dtype=np.float32).reshape(item["ear_frames"], ear.n_mels)
        try:
            prediction = self.classifier.classify(Analysis(mel, item["duration"], item["source_duration"], ear_mel))
        except AudioError as err:
            return Row(item["path"], [], error=str(err), **stat)
        return Row(item["path"], prediction.top(self.top), duration=prediction.duration, music=prediction.music, **stat)


def _count(filesystem: pafs.FileSystem, path: str, fmt: str, summary: Summary) -> Summary:
    """Count files, failures and top genres into ``summary``, read back from the written rows (three small columns)."""
    files = pads.dataset(path, filesystem=filesystem, format="parquet" if fmt == "parquet" else "json")
    for batch in files.to_batches(columns=["ok", "top", "music"]):
        columns = (batch.column(name).to_pylist() for name in ("ok", "top", "music"))
        for ok, top, music in zip(*columns, strict=True):
            summary.add(ok, (top[0]["label"] if is_music(music) else NOT_MUSIC) if ok else None)
    return summary
