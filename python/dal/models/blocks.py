"""Building blocks shared by every model: a small 2D U-Net (with or without skips)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Two 3x3 convolutions, each with batch norm and LeakyReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels),
        nn.LeakyReLU(0.1, inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels),
        nn.LeakyReLU(0.1, inplace=True),
    )


class UNet(nn.Module):
    """A small 2D U-Net: ``levels`` resolutions, ``channels * 2**l`` features at level ``l``,
    max-pool down, nearest-neighbour up.

    With ``skips=False`` it is a plain bottleneck autoencoder (no path around the bottleneck),
    the bottleneck squeezed to ``latent`` channels at 1/2^(levels-1) resolution.

    Input (N, in_channels, H, W) with H, W divisible by 2^(levels-1); output (N, out_channels, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int, channels: int = 16, levels: int = 3,
                 skips: bool = True, latent: int | None = None):
        super().__init__()
        self.skips = skips
        widths = [channels * 2**level for level in range(levels)]
        self.down = nn.ModuleList()
        previous = in_channels
        for width in widths:
            self.down.append(conv_block(previous, width))
            previous = width
        self.squeeze = self.expand = None
        if not skips and latent is not None:
            self.squeeze = nn.Conv2d(widths[-1], latent, 1)
            self.expand = nn.Conv2d(latent, widths[-1], 1)
        self.up = nn.ModuleList()
        for width, below in zip(reversed(widths[:-1]), reversed(widths[1:])):
            self.up.append(conv_block(below + (width if skips else 0), width))
        self.head = nn.Conv2d(widths[0], out_channels, 1)
        self.factor = 2 ** (levels - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] % self.factor or x.shape[-1] % self.factor:
            raise ValueError(f"x: expected H and W divisible by {self.factor}, got {tuple(x.shape[-2:])}")
        features = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            features.append(x)
        if self.squeeze is not None:
            x = self.expand(F.leaky_relu(self.squeeze(x), 0.1))
        for block, skip in zip(self.up, reversed(features[:-1])):
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = block(torch.cat([x, skip], 1) if self.skips else x)
        return self.head(x)
