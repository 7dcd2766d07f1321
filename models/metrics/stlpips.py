"""ST-LPIPS (shift-tolerant LPIPS, Ghildyal & Liu, ECCV 2022) with the weights shipped in `stlpips-pytorch`.

The package's own code imports torchvision, so it is never imported: this module rebuilds the network its
`alex_shift_tolerant.pth` belongs to (`LPIPS(net="alex", variant="shift_tolerant")`, version 0.1 scaling) and
loads that file. In this variant every weight — the anti-aliased AlexNet trunk and the five linear heads — is in
the file; nothing comes from torchvision's ImageNet AlexNet. It is not LPIPS: report it as ST-LPIPS.
"""

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flam.models.metrics._weights import package_file, verify_sha256

DISTRIBUTION = "stlpips-pytorch"
PACKAGE = "stlpips_pytorch"
WEIGHTS = "weights/vST0.0/alex_shift_tolerant.pth"
WEIGHTS_SHA256 = "b356b382f96010f77d085ee8343ecd9fd322d0a56e8de2b2d0549fafcad8b9ee"
CHANNELS = (64, 192, 384, 256, 256)
# Smallest side the trunk accepts: the third blur's reflection padding needs 3 pixels there.
MIN_SIDE = 21

# Key in the package's state dict -> key in ours (the package nests layers in torchvision-style slices).
_KEY_MAP = {
    "scaling_layer.shift": "shift",
    "scaling_layer.scale": "scale",
    "net.slice1.0.weight": "conv1.weight",
    "net.slice1.0.bias": "conv1.bias",
    "net.slice1.1.filt": "blur1.filt",
    "net.slice2.4.filt": "blur2.filt",
    "net.slice2.5.weight": "conv2.weight",
    "net.slice2.5.bias": "conv2.bias",
    "net.slice3.8.filt": "blur3.filt",
    "net.slice3.9.weight": "conv3.weight",
    "net.slice3.9.bias": "conv3.bias",
    "net.slice4.11.weight": "conv4.weight",
    "net.slice4.11.bias": "conv4.bias",
    "net.slice5.13.weight": "conv5.weight",
    "net.slice5.13.bias": "conv5.bias",
    **{f"lin{k}.model.1.weight": f"lins.{k}.weight" for k in range(5)},
}


class BlurPool(nn.Module):
    """Anti-aliased stride-2 downsampling: reflection pad 2 per side, fixed 3×3 binomial blur per channel."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        taps = torch.tensor([1.0, 2.0, 1.0])
        kernel = taps[:, None] * taps[None, :] / 16.0  # [3,3], sums to 1
        self.register_buffer("filt", kernel.expand(channels, 1, 3, 3).clone())  # [C,1,3,3]

    def forward(self, x: Tensor) -> Tensor:
        """[B,C,H,W] -> [B,C,(H+1)//2,(W+1)//2]."""
        padded = F.pad(x, (2, 2, 2, 2), mode="reflect")  # [B,C,H+4,W+4]
        return F.conv2d(padded, self.filt, stride=2, groups=x.shape[1])


class STLPIPS(nn.Module):
    """Shift-tolerant AlexNet trunk + per-layer linear heads; forward(x, y) -> [B] perceptual distances."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("shift", torch.zeros(1, 3, 1, 1))  # LPIPS v0.1 input scaling layer
        self.register_buffer("scale", torch.ones(1, 3, 1, 1))
        self.conv1 = nn.Conv2d(3, 64, kernel_size=11, stride=1, padding=2)
        self.blur1 = BlurPool(64)
        self.blur2 = BlurPool(64)
        self.conv2 = nn.Conv2d(64, 192, kernel_size=5, padding=2)
        self.blur3 = BlurPool(192)
        self.conv3 = nn.Conv2d(192, 384, kernel_size=3, padding=1)
        self.conv4 = nn.Conv2d(384, 256, kernel_size=3, padding=1)
        self.conv5 = nn.Conv2d(256, 256, kernel_size=3, padding=1)
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in CHANNELS)

    def features(self, x: Tensor) -> list[Tensor]:
        """The five ReLU feature maps of the trunk for images x [B,3,H,W] in [0, 1]."""
        h = ((2.0 * x - 1.0) - self.shift) / self.scale  # [B,3,H,W], [-1, 1] then LPIPS scaling
        h1 = F.relu(self.blur1(self.conv1(h)))  # [B,64,~H/2,~W/2]; blur before ReLU as in the package
        h2 = F.relu(self.conv2(self.blur2(F.max_pool2d(h1, 3, stride=1))))  # [B,192,~H/4,~W/4]
        h3 = F.relu(self.conv3(self.blur3(F.max_pool2d(h2, 3, stride=1))))  # [B,384,~H/8,~W/8]
        h4 = F.relu(self.conv4(h3))  # [B,256,~H/8,~W/8]
        h5 = F.relu(self.conv5(h4))  # [B,256,~H/8,~W/8]
        return [h1, h2, h3, h4, h5]

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """ST-LPIPS distance [B] between images x, y [B,3,H,W] in [0, 1] (H, W >= MIN_SIDE, no resizing)."""
        if x.shape != y.shape or x.ndim != 4 or x.shape[1] != 3:
            shapes = f"{tuple(x.shape)} and {tuple(y.shape)}"
            raise ValueError(f"ST-LPIPS needs two [B,3,H,W] batches of one shape, got {shapes}")
        if min(x.shape[-2:]) < MIN_SIDE:
            raise ValueError(f"ST-LPIPS needs images of at least {MIN_SIDE}×{MIN_SIDE}, got {tuple(x.shape[-2:])}")
        total = x.new_zeros(x.shape[0])  # [B]
        for lin, fx, fy in zip(self.lins, self.features(x), self.features(y), strict=True):
            nx = fx / (fx.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)  # [B,C,h,w], unit length over channels
            ny = fy / (fy.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            total = total + lin((nx - ny).pow(2)).mean(dim=(1, 2, 3))  # [B], spatial average of the head
        return total


def read_weights() -> dict[str, Tensor]:
    """The package's state dict renamed to ours, after checking the file's SHA-256 (weights_only load)."""
    path = package_file(DISTRIBUTION, PACKAGE, WEIGHTS)
    verify_sha256(path, WEIGHTS_SHA256)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    if set(raw) != set(_KEY_MAP):
        raise ValueError(f"{path}: unexpected keys {sorted(set(raw) ^ set(_KEY_MAP))}")
    return {_KEY_MAP[key]: value for key, value in raw.items()}


@functools.lru_cache(maxsize=4)
def load_stlpips(device: str | torch.device = "cpu") -> STLPIPS:
    """ST-LPIPS with the shipped weights, in eval mode on `device`; cached per process and device."""
    model = STLPIPS()
    model.load_state_dict(read_weights(), strict=True)
    return model.eval().requires_grad_(False).to(device)


@torch.inference_mode()
def stlpips_frames(model: STLPIPS, pred: Tensor, target: Tensor, batch_size: int = 32) -> Tensor:
    """ST-LPIPS per frame [T] for float videos [T,3,H,W] in [0, 1], in batches to bound memory."""
    device = next(model.parameters()).device
    out = [
        model(pred[i : i + batch_size].to(device), target[i : i + batch_size].to(device))  # [b]
        for i in range(0, pred.shape[0], batch_size)
    ]
    return torch.cat(out)  # [T]
