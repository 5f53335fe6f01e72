"""A small conditional U-Net: K past frames and the noisy current frame in, the clean current frame out."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from triton_models.embeddings import sinusoidal_embedding


class ResBlock(nn.Module):
    def __init__(self, channels_in: int, channels_out: int, embed_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(8, channels_in)
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, padding=1)
        self.embed = nn.Linear(embed_dim, channels_out)
        self.norm2 = nn.GroupNorm(8, channels_out)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, padding=1)
        self.skip = nn.Conv2d(channels_in, channels_out, 1) if channels_in != channels_out else nn.Identity()

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.embed(embedding)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return h + self.skip(x)


class ConditionalUNet(nn.Module):
    """A U-Net on the half-resolution grid (pixel unshuffle in, pixel shuffle out), three scales.

    Working at half resolution from the first layer cuts the compute 4x against a full-resolution first level;
    the score is a patch mean anyway. H and W must be divisible by 8. The output is a residual on the last past
    frame, so the network only learns what changes between frames.
    """

    def __init__(self, context: int, base_channels: int = 32) -> None:
        super().__init__()
        c = base_channels
        embed_dim = 4 * c
        self.base_channels = c
        self.time_mlp = nn.Sequential(nn.Linear(c, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim))
        self.stem = nn.Sequential(nn.PixelUnshuffle(2), nn.Conv2d(4 * (context + 1), c, 3, padding=1))
        self.enc1 = ResBlock(c, c, embed_dim)
        self.down1 = nn.Conv2d(c, 2 * c, 3, stride=2, padding=1)
        self.enc2 = ResBlock(2 * c, 2 * c, embed_dim)
        self.down2 = nn.Conv2d(2 * c, 2 * c, 3, stride=2, padding=1)
        self.mid = ResBlock(2 * c, 2 * c, embed_dim)
        self.up2 = nn.ConvTranspose2d(2 * c, 2 * c, 2, stride=2)
        self.dec2 = ResBlock(4 * c, 2 * c, embed_dim)
        self.up1 = nn.ConvTranspose2d(2 * c, c, 2, stride=2)
        self.dec1 = ResBlock(2 * c, c, embed_dim)
        self.out = nn.Sequential(nn.GroupNorm(8, c), nn.SiLU(), nn.Conv2d(c, 4, 3, padding=1), nn.PixelShuffle(2))

    def forward(self, past: torch.Tensor, noisy: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """past [B, K, H, W] and noisy [B, 1, H, W] in [-1, 1]; returns the predicted clean frame [B, 1, H, W]."""
        embedding = self.time_mlp(sinusoidal_embedding(t, self.base_channels))
        h0 = self.enc1(self.stem(torch.cat([past, noisy], dim=1)), embedding)
        h1 = self.enc2(self.down1(h0), embedding)
        h = self.mid(self.down2(h1), embedding)
        h = self.dec2(torch.cat([self.up2(h), h1], dim=1), embedding)
        h = self.dec1(torch.cat([self.up1(h), h0], dim=1), embedding)
        return past[:, -1:] + self.out(h)
