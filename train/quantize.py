"""Quantise a musicnn checkpoint's two timbral convolutions to int8, in place, and check the answers.

    python -m train.quantize --model DIR --data ../shared/gtzan --split-dir ../shared/gtzan-splits

The two timbral convolutions (7x38 and 7x67 filters over 208 channels) are most of the musicnn
PCRNN's time; int8 there roughly halves it and leaves the answers nearly as they were, where int8
on the whole graph is slower and changes answers. The command

1. exports ``DIR/model.safetensors`` afresh as a float32 graph (so it can be re-run on any
   weights, and on a checkpoint it already quantised);
2. calibrates activation ranges (MinMax) on the distinct 3-s patches of ``--clips`` clips of the
   artist-filtered **train** list, spread over the genres in list order;
3. quantises those two ``Conv`` nodes only, as QDQ: int8 weights per output channel with
   ``reduce_range`` (7-bit: AVX2 without VNNI overflows its 16-bit sums otherwise), uint8
   activations;
4. compares int8 with float32 on the **valid** list (and ``--field`` clips, in genre
   sub-folders, if given): top-1 agreement, the largest probability difference, and how many
   clips each gets right;
5. writes the graph over ``DIR/model.onnx`` (a temporary file, checked by loading it, then an
   atomic rename) with metadata ``genrewiz.quantization`` saying all of the above.

:class:`genrewiz.engine.OnnxEngine` serves a graph with quantised operators only when that
metadata is there. ``save_pretrained`` writes float32 again; run this after it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from genrewiz.checkpoint import META_QUANTIZATION, ONNX_FILE, WEIGHTS_FILE, weights_digest
from genrewiz.engine import OnnxEngine, distinct_patches
from genrewiz.export import export_onnx
from genrewiz.features import make_windows
from genrewiz.model import PCRNN
from genrewiz.predict import GenreClassifier, analyse
from train import data

logger = logging.getLogger("train.quantize")

AUDIO_EXTENSIONS = (".ogg", ".wav", ".flac", ".mp3", ".au")


def timbral_convolutions(graph_path: Path) -> list[str]:
    """Names of the Conv nodes with 2-D filters wider than one mel bin: musicnn's timbral filters."""
    import onnx

    graph = onnx.load(str(graph_path)).graph
    shapes = {init.name: tuple(init.dims) for init in graph.initializer}
    names = [
        node.name
        for node in graph.node
        if node.op_type == "Conv" and node.name.startswith("/frontend/")  # musicnn's front end, not the AudioSet ear's
        and len(shapes.get(node.input[1], ())) == 4 and shapes[node.input[1]][3] > 1
    ]
    if len(names) != 2:
        raise ValueError(f"expected musicnn's two timbral convolutions in {graph_path}, found {names}")
    return names


def calibration_clips(clips: list[data.Clip], count: int) -> list[data.Clip]:
    """``count`` clips spread over the genres: the first of each genre in list order, then the second, ..."""
    by_genre: dict[str, list[data.Clip]] = {}
    for clip in clips:
        by_genre.setdefault(clip.label, []).append(clip)
    chosen: list[data.Clip] = []
    for rank in range(max(len(v) for v in by_genre.values())):
        chosen += [group[rank] for group in by_genre.values() if rank < len(group)]
    return chosen[:count]


class PatchReader:
    """ONNX Runtime's calibration data reader: the trunk stage's feeds, a few distinct patches at a time."""

    def __init__(self, engine: OnnxEngine, paths: list[Path], chunk: int = 8) -> None:
        self.feeds = self._feeds(engine, paths, chunk)

    @staticmethod
    def _feeds(engine: OnnxEngine, paths: list[Path], chunk: int) -> Iterator[dict[str, np.ndarray]]:
        assert engine.config is not None and engine.patch_frames is not None
        for path in paths:
            windows = make_windows(analyse(path, engine.config).mel, engine.config).data
            patches, _ = distinct_patches(windows, engine.patch_frames)
            for i in range(0, len(patches), chunk):
                yield engine.trunk_feeds(patches[i : i + chunk])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.feeds, None)

    def rewind(self) -> None:
        raise NotImplementedError("MinMax calibration reads the data once")


def compare(reference: OnnxEngine, candidate: OnnxEngine, clips: list[tuple[Path, str]]) -> dict[str, float | int]:
    """Top-1 agreement, largest whole-song probability difference and both graphs' hits on labelled clips."""
    assert reference.config is not None
    agree, worst, hits = 0, 0.0, [0, 0]
    for path, label in clips:
        analysis = analyse(path, reference.config, ear=reference.audioset_config)
        a, b = (GenreClassifier(engine=engine).classify(analysis).probabilities for engine in (reference, candidate))
        agree += int(np.argmax(a) == np.argmax(b))
        worst = max(worst, float(np.abs(a - b).max()))
        for i, probs in enumerate((a, b)):
            hits[i] += int(reference.labels[int(np.argmax(probs))] == label)
    return {"clips": len(clips), "top1_agree": agree, "max_prob_diff": round(worst, 5), "correct_float32": hits[0], "correct_int8": hits[1]}


def labelled_files(folder: Path) -> list[tuple[Path, str]]:
    """Every audio file under ``folder``'s genre sub-folders, labelled by its sub-folder, sorted."""
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
    return [(p, p.relative_to(folder).parts[0]) for p in files]


def quantize(
    model_dir: Path, data_dir: Path, split_dir: Path, clips: int = 30, field: Path | None = None
) -> dict[str, object]:
    """Rewrite ``model_dir/model.onnx`` with int8 timbral convolutions; returns the metadata written."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    weights = model_dir / WEIGHTS_FILE
    model = PCRNN.from_pretrained(model_dir)
    if model.cnn_branch != "musicnn":
        raise ValueError(f"{model_dir} is a {model.cnn_branch} PCRNN; only the musicnn branch has timbral convolutions")
    everything = data.scan_gtzan(data_dir)
    train_clips, _ = data.filtered_subset(everything, split_dir, "train", allow_missing=True)
    valid_clips, _ = data.filtered_subset(everything, split_dir, "valid", allow_missing=True)
    calibration = calibration_clips(train_clips, clips)
    if not calibration:
        raise ValueError(f"no train-list clips found under {data_dir}")
    with tempfile.TemporaryDirectory(dir=model_dir) as work:
        fp32, int8 = Path(work) / "fp32.onnx", Path(work) / ONNX_FILE
        export_onnx(model, fp32, weights_digest(weights))
        nodes = timbral_convolutions(fp32)
        reference = OnnxEngine(fp32)
        logger.info("calibrating %s on %d train-list clips", ", ".join(nodes), len(calibration))
        quantize_static(
            str(fp32),
            str(int8),
            PatchReader(reference, [c.path for c in calibration]),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["Conv"],
            nodes_to_quantize=nodes,
            per_channel=True,
            reduce_range=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
        candidate = OnnxEngine(int8)
        check = {"valid": compare(reference, candidate, [(c.path, c.label) for c in valid_clips])}
        if field is not None:
            check["field"] = compare(reference, candidate, labelled_files(field))
        metadata: dict[str, object] = {
            "operators": nodes,
            "format": "QDQ",
            "weights": "int8, per output channel, reduce_range (7-bit)",
            "activations": "uint8",
            "calibration": {"method": "MinMax", "clips": [c.key for c in calibration], "split": "artist-filtered train"},
            "check_vs_float32": check,
        }
        graph = onnx.load(str(int8))
        kept = {p.key: p.value for p in onnx.load(str(fp32)).metadata_props}
        del graph.metadata_props[:]
        for key, value in {**kept, META_QUANTIZATION: json.dumps(metadata)}.items():
            graph.metadata_props.add(key=key, value=value)
        onnx.save(graph, str(int8))
        if OnnxEngine(int8).quantization != metadata:
            raise RuntimeError("the quantised graph did not read back with its metadata")
        os.replace(int8, model_dir / ONNX_FILE)
    return metadata


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="checkpoint folder (model.safetensors, config.json)")
    parser.add_argument("--data", type=Path, required=True, help="GTZAN folder (genre sub-folders)")
    parser.add_argument("--split-dir", type=Path, required=True, help="folder of the artist-filtered split lists")
    parser.add_argument("--clips", type=int, default=30, help="train-list clips to calibrate on (default: 30)")
    parser.add_argument("--field", type=Path, help="also compare with float32 on the clips under this folder's genre sub-folders")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        metadata = quantize(args.model, args.data, args.split_dir, args.clips, args.field)
    except (ValueError, FileNotFoundError, data.SplitError) as err:
        parser.error(str(err))
    print(json.dumps(metadata["check_vs_float32"], indent=2))


if __name__ == "__main__":
    main()
