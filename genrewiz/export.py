"""ONNX export: a PCRNN as the graph :class:`~genrewiz.engine.OnnxEngine` serves.

This module sits above the model: it imports the model's modules, never the reverse (the
mixin's ``save_pretrained`` calls :func:`export_onnx` lazily). A from-scratch PCRNN is exported
as it is; a musicnn PCRNN as :class:`PatchedPCRNN`, two stages whose front end is rewritten
exactly (:class:`ExactFrontEnd`) from whatever weights are exported.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import META_AUDIOSET_FEATURES, META_FEATURES, META_LABELS, META_PATCH_FRAMES, META_WEIGHTS
from .musicnn import EMBEDDING_SIZE, PATCH_FRAMES, MusiCNN, logits_from_embeddings

if TYPE_CHECKING:
    from .model import PCRNN

OPSET = 17
"""The ONNX opset of the exported graphs."""

LOGC_BOUND = 50.0
"""Above any log-compressed mel value: ``log10(1 + 10000 * power)`` is at most 42.6 for the largest float32 power."""


class ExactFrontEnd(nn.Module):
    """:meth:`MusiCNN.frontend_maps` computed with far fewer operations and the same result, for export.

    Each front-end branch is conv -> ReLU -> batch norm -> max over frequency. Two exact rewrites,
    both derived from the weights given (any musicnn checkpoint, fine-tuned or not):

    - **dead filters are constants.** Most of MSD_musicnn's filters have vanished weights and a
      negative bias, so the ReLU gives exactly 0 for any input the log compression can produce
      (:data:`LOGC_BOUND` bounds it); such a channel is its batch norm's shift everywhere and is
      not computed at all. Only a filter whose bias provably outweighs every input is dropped.
    - **max first.** The batch norm is ``s * v + b`` per channel, so for ``s >= 0`` the max over
      frequency commutes with it and the ReLU, and for ``s < 0`` it picks the minimum, which is
      the max of the negated convolution. The live filters with ``s < 0`` are negated, the max is
      taken straight after the convolution (a MaxPool over the whole frequency axis) and the
      sign flip, ReLU and batch norm run on a tensor as many times smaller as there were
      frequency positions.

    Each convolution's output channels are padded with zero filters to a multiple of 8, so that
    ONNX Runtime keeps it in its blocked channel layout; the padding is cut off after the max.
    """

    def __init__(self, trunk: MusiCNN, n_mels: int, multiple: int = 8) -> None:
        super().__init__()
        self.input_bn = trunk.input_bn
        in_scale = (trunk.input_bn.weight / torch.sqrt(trunk.input_bn.running_var + trunk.input_bn.eps)).detach()
        in_shift = trunk.input_bn.bias.detach() - trunk.input_bn.running_mean * in_scale
        input_bound = float((in_scale.abs() * LOGC_BOUND + in_shift.abs()).max())
        self.convs = nn.ModuleList()
        self.channels: list[int] = []
        self.pads: list[tuple[int, int]] = []
        self.widths: list[int] = []
        signs, scales, shifts, live_ids, dead_ids, dead_values = [], [], [], [], [], []
        branches = [(conv, bn, (3, 3)) for conv, bn in zip(trunk.timbral, trunk.timbral_bn)]
        branches += [
            (conv, bn, ((conv.kernel_size[0] - 1) // 2, conv.kernel_size[0] // 2))
            for conv, bn in zip(trunk.temporal, trunk.temporal_bn)
        ]
        offset = 0
        for conv, bn, pad in branches:
            weight, bias = conv.weight.detach(), conv.bias.detach()
            scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
            shift = bn.bias.detach() - bn.running_mean * scale
            dead = (bias < 0) & (weight.flatten(1).abs().sum(1) * input_bound < -bias)
            live = (~dead).nonzero().flatten()
            if len(live) == 0:  # keep one filter so every branch stays a graph of the same form
                live, dead = torch.tensor([0]), dead.clone().index_fill_(0, torch.tensor([0]), False)
            sign = torch.where(scale[live] < 0, -1.0, 1.0)
            padded = -(-len(live) // multiple) * multiple
            flipped = nn.Conv2d(conv.in_channels, padded, conv.kernel_size)
            with torch.no_grad():
                flipped.weight.zero_()
                flipped.bias.zero_()
                flipped.weight[: len(live)] = weight[live] * sign.view(-1, 1, 1, 1)
                flipped.bias[: len(live)] = bias[live] * sign
            self.convs.append(flipped)
            self.channels.append(len(live))
            self.pads.append(pad)
            self.widths.append(n_mels - conv.kernel_size[1] + 1)
            signs.append(sign)
            scales.append(scale[live])
            shifts.append(shift[live])
            live_ids.append(live + offset)
            dead_ids.append(dead.nonzero().flatten() + offset)
            dead_values.append(shift[dead])  # batch norm of the ReLU's exact 0
            offset += conv.out_channels
        self.register_buffer("sign", torch.cat(signs).view(1, -1, 1))
        self.register_buffer("scale", torch.cat(scales).view(1, -1, 1))
        self.register_buffer("shift", torch.cat(shifts).view(1, -1, 1))
        self.register_buffer("dead_value", torch.cat(dead_values).view(1, -1, 1))
        order = torch.cat([*live_ids, *dead_ids])
        self.register_buffer("order", torch.argsort(order))  # computed channels first -> musicnn's channel order

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """``(batch, frames, mels)`` -> ``(batch, 561, frames)``, equal to ``MusiCNN.frontend_maps``."""
        x = self.input_bn(patches.unsqueeze(1))
        maps = []
        for conv, channels, (before, after), width in zip(self.convs, self.channels, self.pads, self.widths):
            y = F.max_pool2d(conv(F.pad(x, (0, 0, before, after))), kernel_size=(1, width))
            maps.append(y[:, :channels, :, 0])
        live = F.relu(torch.cat(maps, dim=1) * self.sign) * self.scale + self.shift
        dead = self.dead_value.expand(live.shape[0], -1, live.shape[2])
        return torch.cat([live, dead], dim=1).index_select(1, self.order)


class PatchedPCRNN(nn.Module):
    """A musicnn PCRNN as two stages, the graph ONNX Runtime serves: patches -> embeddings, embeddings -> logits.

    ``forward(patches, x, embeddings)`` returns ``(patch_embeddings, logits)``: the trunk's
    200-float embedding of each ``(187, 96)`` patch, and the logits of windows ``x`` given
    ``embeddings[w, k]``, the embedding of patch ``k`` of window ``w``. The two outputs share no
    computation, so a caller runs the trunk over a song's distinct patches a few at a time
    (asking for ``patch_embeddings`` only) and the head over a few windows at a time (asking for
    ``logits``), feeding empty tensors to the inputs a stage does not read: memory stays bounded
    whatever the song's length, and windows overlapping by half share the trunk's work. With
    ``rewrite`` (the default) the front end is :class:`ExactFrontEnd`. The head is
    :func:`logits_from_embeddings`, so it is whatever the PCRNN's own is.
    """

    def __init__(self, pcrnn: PCRNN, rewrite: bool = True) -> None:
        super().__init__()
        self.pcrnn = pcrnn
        trunk = pcrnn.cnn.trunk
        self.frontend = ExactFrontEnd(trunk, pcrnn.features.n_mels) if rewrite else trunk.frontend_maps

    def forward(self, patches: torch.Tensor, x: torch.Tensor, embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        patch_embeddings = self.pcrnn.cnn.trunk.embed_frontend(self.frontend(patches))
        return patch_embeddings, logits_from_embeddings(self.pcrnn, embeddings, x)


class PatchedEarPCRNN(PatchedPCRNN):
    """:class:`PatchedPCRNN` with the AudioSet ear as a third stage: its 10-s patches -> summaries, and music log-odds.

    ``forward(patches, x, embeddings, ear_patches, ear_summaries)`` returns ``(patch_embeddings,
    ear_patch_summaries, logits, music)``; as in the two-stage graph, no output shares work with
    another, so each stage runs on its own with empty or blank tensors for the inputs it does not read.
    """

    def forward(  # type: ignore[override]
        self, patches: torch.Tensor, x: torch.Tensor, embeddings: torch.Tensor, ear_patches: torch.Tensor,
        ear_summaries: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        patch_embeddings = self.pcrnn.cnn.trunk.embed_frontend(self.frontend(patches))
        summaries = self.pcrnn.ear.patch_summaries(ear_patches)
        logits = logits_from_embeddings(self.pcrnn, embeddings, x, ear_summaries)
        return patch_embeddings, summaries, logits, self.pcrnn.music_logits(ear_summaries)


def export_onnx(model: PCRNN, path: str | Path, weights_sha256: str) -> None:
    """Write ``model`` (in eval mode, on the CPU) as an ONNX graph with dynamic batch axes.

    A from-scratch PCRNN maps windows ``x`` to logits. A musicnn PCRNN is exported as
    :class:`PatchedPCRNN`, inputs ``patches``, ``x``, ``embeddings`` and
    outputs ``patch_embeddings``, ``logits``, so that :class:`~genrewiz.engine.OnnxEngine` runs the trunk once
    per distinct patch, a few patches at a time, with the exact front-end rewrite. Needs the
    ``onnx`` package (``torch.onnx.export`` uses it, and it writes the metadata): a
    training-time dependency, never a serving one. ``model`` is left as it was.
    """
    import onnx

    frozen = copy.deepcopy(model).cpu().eval()
    x = torch.zeros(2, 1, model.features.window_frames, model.features.n_mels)
    metadata = {
        META_WEIGHTS: weights_sha256,
        META_LABELS: json.dumps(list(model.labels)),
        META_FEATURES: json.dumps(model.features.to_dict(), sort_keys=True),
    }
    if model.cnn_branch == "musicnn":
        graph_module: torch.nn.Module = PatchedPCRNN(frozen)
        per_window = model.features.window_frames // PATCH_FRAMES
        patches = torch.zeros(3, PATCH_FRAMES, model.features.n_mels)
        inputs: tuple = (patches, x, torch.zeros(2, per_window, EMBEDDING_SIZE))
        axes = {"patches": {0: "p"}, "x": {0: "n"}, "embeddings": {0: "n"}, "patch_embeddings": {0: "p"}, "logits": {0: "n"}}
        outputs = ["patch_embeddings", "logits"]
        metadata[META_PATCH_FRAMES] = str(PATCH_FRAMES)
        if model.ear is not None:
            ear = model.audioset_features
            graph_module = PatchedEarPCRNN(frozen)
            inputs += (torch.zeros(3, ear.patch_frames, ear.n_mels), torch.zeros(2, ear.patches_per_window, model.ear.summary_size))
            axes = {"patches": {0: "p"}, "x": {0: "n"}, "embeddings": {0: "n"}, "ear_patches": {0: "q"},
                    "ear_summaries": {0: "n"}, "patch_embeddings": {0: "p"}, "ear_patch_summaries": {0: "q"},
                    "logits": {0: "n"}, "music": {0: "n"}}
            outputs = ["patch_embeddings", "ear_patch_summaries", "logits", "music"]
            metadata[META_AUDIOSET_FEATURES] = json.dumps(ear.to_dict(), sort_keys=True)
    else:
        graph_module, inputs, axes, outputs = frozen, (x,), {"x": {0: "n"}, "logits": {0: "n"}}, ["logits"]
    path = Path(path)
    with warnings.catch_warnings():  # the TorchScript exporter's notes on GRU batch sizes and constant folding
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph_module,
            inputs,
            str(path),
            input_names=list(axes)[: len(inputs)],
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
    graph = onnx.load(str(path))
    for key, value in metadata.items():
        graph.metadata_props.add(key=key, value=value)
    onnx.save(graph, str(path))
