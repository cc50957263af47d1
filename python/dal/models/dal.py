"""DAL: Disentangled Anatomy Learning (our reconstruction of Yang et al. 2026; see docs/design.md).

Choices made where the paper is silent, chosen to keep the training step cheap on a CPU:

- Anatomy encoder: a small U-Net (``channels`` 16, 3 levels) to K logits; the anatomy ``A`` is
  the straight-through one-hot of them (``dal.ops.onehot_st``: hard forward, softmax backward).
- Imaging code ``z``: the per-tissue median and spread of ``x`` over ``A`` (2K numbers, nearly
  free, interpretable; the median is robust to a lesion inside a tissue) and the global-average-pooled features of a 3-layer strided CNN (``code_channels``).
- Decoder ``D(A, z)``: the per-tissue median image ``sum_k A_k median_k`` (the piecewise-constant
  image that ``A`` and ``z`` already describe) plus a light correction: a conv net on ``A`` and two
  coordinate channels (for bias fields), each block modulated by FiLM from ``z``. The correction's
  last layer starts at zero, so an untrained decoder paints each tissue with its median.
- Restoration: a U-Net (half the anatomy encoder's width by default) from the Sobel edges of ``A`` (``dal.ops.sobel``, one
  channel per tissue) to anatomy logits, trained to rebuild ``A`` with random blocks of the edge
  map dropped, so it learns to fill regions from their surroundings. ``A_hat`` = one-hot of its
  logits; PHI = ``D(A_hat, z)``.
- One training step: the anatomy of view 1 and the imaging code of view 1 on the whole batch;
  the terms that only regularise or train a second network on a random ``auxiliary_fraction`` of
  it (the batch's first slices; slices come shuffled): the anatomy of view 2 (only view 1
  back-propagates unless ``second_view_grad``), the restoration (from view 1's anatomy with
  simulated abnormal regions when ``anomaly_probability`` > 0), and the decoder's cross-
  reconstruction of view 1 from the anatomy of view 2 and PHI of view 1, decoded in one batch with
  the self-reconstruction. A quarter of the batch (8 slices of 32) keeps a DAL step within twice
  a DAE step: 1.55x in bf16 and 1.74x in float32 on an AVX-512 Xeon, against 1.84x and 2.05x with
  half (``benchmarks/bench_models.py``); the restoration and the decoder run in float32 on the CPU
  (:func:`float32_on_cpu`). Losses: see :class:`~dal.models.config.LossConfig`.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from dal.models.blocks import UNet
from dal.models.config import LossConfig, ModelConfig
from dal.models.losses import invariance_loss, prior_loss, reconstruction_loss, restoration_loss
from dal.ops import onehot_st, sobel


def tissue_statistics(x: torch.Tensor, anatomy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted median and mean absolute deviation from it of ``x`` (N, 1, H, W) over each
    anatomy channel (N, K, H, W): two (N, K) tensors (0 for a tissue absent from the slice).

    The median, not the mean: a lesion that the anatomy files under some tissue (a bright
    tumour taken for grey matter) would drag that tissue's mean, and with it the whole
    pseudo-healthy tissue, towards the lesion; the median of the tissue's bulk stays healthy.
    The gradient reaches ``x`` (through the selected values), not the anatomy.
    """
    n, k = anatomy.shape[:2]
    values, order = x.flatten(2).sort(-1)                                   # (N, 1, P)
    weights = anatomy.flatten(2).gather(-1, order.expand(n, k, -1))         # (N, K, P), in value order
    cumulative = weights.cumsum(-1)
    total = cumulative[..., -1:]
    index = (cumulative < 0.5 * total).sum(-1, keepdim=True).clamp(max=values.shape[-1] - 1)
    present = (total > 0).to(x.dtype)
    median = values.expand(n, k, -1).gather(-1, index) * present             # (N, K, 1)
    deviation = (weights * (values - median).abs()).sum(-1, keepdim=True) / total.clamp_min(1e-6)
    return median[..., 0], deviation[..., 0] * present[..., 0]


class ImagingEncoder(nn.Module):
    """``z`` = [per-tissue median (K), per-tissue spread (K), pooled CNN features (code_channels)]."""

    def __init__(self, classes: int, code_channels: int):
        super().__init__()
        width = max(code_channels // 2, 4)
        self.cnn = nn.Sequential(
            nn.Conv2d(1, width, 3, stride=2, padding=1), nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(width, width, 3, stride=2, padding=1), nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(width, code_channels, 3, stride=2, padding=1),
        )
        self.size = 2 * classes + code_channels

    def forward(self, x: torch.Tensor, anatomy: torch.Tensor) -> torch.Tensor:
        mean, spread = tissue_statistics(x, anatomy)
        return torch.cat([mean, spread, self.cnn(x).mean((2, 3))], 1)


class FiLMBlock(nn.Module):
    def __init__(self, channels: int, code_size: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.film = nn.Linear(code_size, 2 * channels)

    def forward(self, h: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.film(z)[..., None, None].chunk(2, 1)
        # conv * (1 + gamma) + beta in one pass over the full-resolution features, then in place.
        return F.leaky_relu(torch.addcmul(beta, self.conv(h), 1 + gamma), 0.1, inplace=True)


class Decoder(nn.Module):
    """``x_hat = sum_k A_k median_k(z) + correction(A, coords; FiLM(z))``."""

    def __init__(self, classes: int, code_size: int, channels: int, blocks: int):
        super().__init__()
        self.classes = classes
        self.stem = nn.Conv2d(classes + 2, channels, 3, padding=1)
        self.blocks = nn.ModuleList(FiLMBlock(channels, code_size) for _ in range(blocks))
        self.head = nn.Conv2d(channels, 1, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, anatomy: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        n, _, h, w = anatomy.shape
        means = z[:, : self.classes]
        base = (anatomy * means[..., None, None]).sum(1, keepdim=True)
        rows = torch.linspace(-1, 1, h, device=anatomy.device, dtype=anatomy.dtype).view(1, 1, h, 1).expand(n, 1, h, w)
        cols = torch.linspace(-1, 1, w, device=anatomy.device, dtype=anatomy.dtype).view(1, 1, 1, w).expand(n, 1, h, w)
        hidden = F.leaky_relu(self.stem(torch.cat([anatomy, rows, cols], 1)), 0.1, inplace=True)
        for block in self.blocks:
            hidden = block(hidden, z)
        return base + self.head(hidden)


def float32_on_cpu(net: nn.Module, *inputs: torch.Tensor) -> torch.Tensor:
    """``net(*inputs)``, on the CPU in float32 without autocast: oneDNN's bfloat16 convolutions of
    8 channels (the restoration, the decoder) timed slower there than float32 ones, with the casts
    (an ad-hoc timing of the parts on a Xeon; the step as a whole is in
    ``benchmarks/bench_models.py``); elsewhere as autocast has it."""
    if inputs[0].device.type != "cpu":
        return net(*inputs)
    with torch.autocast("cpu", enabled=False):
        return net(*(tensor.float() for tensor in inputs))


def edge_dropout(edges: torch.Tensor, max_fraction: float, block: int) -> torch.Tensor:
    """Zero random ``block`` x ``block`` squares of each sample's edge map; sample ``i`` loses a
    fraction drawn uniformly in [0, max_fraction] (torch's global generator)."""
    if max_fraction <= 0:
        return edges
    n, _, h, w = edges.shape
    fraction = torch.rand(n, 1, 1, 1, device=edges.device) * max_fraction
    keep = torch.rand(n, 1, -(-h // block), -(-w // block), device=edges.device) >= fraction
    keep = keep.repeat_interleave(block, 2).repeat_interleave(block, 3)[:, :, :h, :w]
    return edges * keep.to(edges.dtype)


def simulate_anomalies(anatomy: torch.Tensor, probability: float, max_regions: int) -> torch.Tensor:
    """Abnormal anatomy for the restoration to learn to undo: in each sample, with ``probability``,
    1 to ``max_regions`` irregular blobs (ellipses of 2 to 14 pixels' radius, 4 to 28 mm at 2 mm,
    with a coarse-noise boundary) inside the brain take one wrong tissue, as a lesion looks to the
    anatomy encoder (a tumour's core as CSF, oedema as grey matter, a cavity as CSF).

    Args:
        anatomy: (N, K, H, W) one-hot, channel 0 the background (outside the brain).

    Returns:
        (N, K, H, W) one-hot of the same dtype (torch's global generator).
    """
    n, k, h, w = anatomy.shape
    if probability <= 0 or max_regions < 1 or k < 3:
        return anatomy
    device, regions = anatomy.device, max_regions
    labels = anatomy.argmax(1)                                               # (N, H, W)
    brain = labels > 0
    # All regions at once, (R, N, ...); a later region overrides an earlier one where they meet.
    chance = torch.full((regions, n), 0.5 * probability, device=device)
    chance[0] = probability
    active = (torch.rand(regions, n, device=device) < chance) & brain.flatten(1).any(1)
    # Each centre a uniformly drawn brain pixel: the j-th one, found in the running count (no multinomial, whose
    # sampling costs an arg-max over every pixel).
    running = brain.flatten(1).cumsum(1)                                     # (N, P)
    rank = (torch.rand(regions, n, device=device) * running[:, -1]).long() + 1
    centre = torch.searchsorted(running, rank.T.contiguous()).T.clamp(max=h * w - 1)   # (R, N)
    cy, cx = (centre // w).float()[..., None, None], (centre % w).float()[..., None, None]
    ry, rx = 2 + 12 * torch.rand(2, regions, n, 1, 1, device=device)
    angle = torch.rand(regions, n, 1, 1, device=device) * torch.pi
    dy = torch.arange(h, device=device, dtype=torch.float32).view(h, 1) - cy   # (R, N, H, 1)
    dx = torch.arange(w, device=device, dtype=torch.float32).view(1, w) - cx   # (R, N, 1, W)
    u = (dy * angle.cos() + dx * angle.sin()) / ry
    v = (-dy * angle.sin() + dx * angle.cos()) / rx
    wobble = F.interpolate(torch.randn(regions * n, 1, 6, 7, device=device), size=(h, w), mode="bilinear",
                           align_corners=False).view(regions, n, h, w)
    blobs = ((u * u + v * v).sqrt() + 0.3 * wobble < 1) & brain & active[..., None, None]
    wrong = torch.randint(1, k, (regions, n, 1, 1), device=device)
    for blob, tissue in zip(blobs, wrong):
        labels = torch.where(blob, tissue, labels)
    return F.one_hot(labels, k).permute(0, 3, 1, 2).to(anatomy.dtype).contiguous(memory_format=torch.channels_last)


class DAL(nn.Module):
    """Disentangled Anatomy Learning (see the module docstring).

    ``forward(batch)`` is the training step's losses; ``pseudo_healthy(x)`` the inference.
    """

    kind = "dal"

    def __init__(self, config: ModelConfig | None = None, losses: LossConfig | None = None):
        super().__init__()
        self.config = config or ModelConfig()
        self.weights = losses or LossConfig()
        c = self.config
        self.anatomy_encoder = UNet(1, c.classes, c.channels, c.levels)
        self.imaging_encoder = ImagingEncoder(c.classes, c.code_channels)
        self.decoder = Decoder(c.classes, self.imaging_encoder.size, c.decoder_channels, c.decoder_blocks)
        self.restorer = UNet(c.classes, c.classes, c.restoration_channels, c.levels)
        # Without the restoration its weights are kept (a checkpoint can switch it back on) but
        # frozen: DistributedDataParallel refuses trainable parameters that get no gradient.
        self.restorer.requires_grad_(c.restoration)

    def to_anatomy(self, logits: torch.Tensor, noisy: bool = False) -> torch.Tensor:
        """One-hot (straight-through) or, for the ablation, softmax of the logits."""
        if not self.config.onehot:
            return F.softmax(logits / self.config.tau, 1)
        noise = None
        if noisy and self.config.gumbel > 0:
            uniform = torch.rand_like(logits).clamp_(1e-6, 1 - 1e-6)
            noise = -torch.log(-torch.log(uniform)) * self.config.gumbel
        return onehot_st(logits, self.config.tau, noise)

    def edges(self, anatomy: torch.Tensor) -> torch.Tensor:
        return sobel(anatomy.contiguous())

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Losses of one training step on ``batch`` ("view1", "view2", optional "tissue"); the
        total is "loss"."""
        w, c = self.weights, self.config
        view1 = batch["view1"]
        part = max(1, round(view1.shape[0] * c.auxiliary_fraction))  # the auxiliary terms' slices
        view2 = batch["view2"][:part]
        logits1 = self.anatomy_encoder(view1)
        with torch.set_grad_enabled(c.second_view_grad and torch.is_grad_enabled()):
            logits2 = self.anatomy_encoder(view2)
        anatomy1, anatomy2 = self.to_anatomy(logits1, noisy=True), self.to_anatomy(logits2, noisy=True)
        z1 = self.imaging_encoder(view1, anatomy1)  # view 2's code would serve no loss
        out = {"invariance": invariance_loss(logits1[:part], logits2)}
        if "tissue" in batch and w.prior > 0:
            out["prior"] = prior_loss(logits1, batch["tissue"])
            if c.second_view_grad:
                out["prior"] = 0.5 * (out["prior"] + prior_loss(logits2, batch["tissue"][:part]))
        layouts = [anatomy1, anatomy2]
        if c.restoration:
            target = anatomy1[:part].detach()
            if self.training:
                abnormal = simulate_anomalies(target, c.anomaly_probability, c.anomaly_regions)
                edges = edge_dropout(self.edges(abnormal), c.edge_dropout, c.edge_dropout_block)
            else:
                edges = self.edges(target)
            restored_logits = float32_on_cpu(self.restorer, edges)
            out["restoration"] = restoration_loss(restored_logits, target)
            layouts.append(self.to_anatomy(restored_logits))
        # The decoder's passes (self-reconstruction, cross-reconstruction, PHI) as one batch:
        # all decode with view 1's code, and one large convolution is cheaper than three.
        codes = torch.cat([z1] + [z1[:part]] * (len(layouts) - 1))
        decoded = float32_on_cpu(self.decoder, torch.cat(layouts), codes).split([len(view1)] + [part] * (len(layouts) - 1))
        out["reconstruction"] = reconstruction_loss(decoded[0], view1)
        out["cross"] = reconstruction_loss(decoded[1], view1[:part])
        out["phi"] = reconstruction_loss(decoded[2], view1[:part]) if c.restoration else out["reconstruction"]  # PHI = D(A, z)
        out["loss"] = sum(getattr(w, name) * value for name, value in out.items())
        return out

    @torch.no_grad()
    def pseudo_healthy(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The pseudo-healthy image of ``x`` (N, 1, H, W) and its parts: "anatomy", "edges",
        "restored_anatomy" (N, K, H, W) and "phi" (N, 1, H, W)."""
        anatomy = self.to_anatomy(self.anatomy_encoder(x))
        z = self.imaging_encoder(x, anatomy)
        edges = self.edges(anatomy)
        restored = self.to_anatomy(self.restore(edges)) if self.config.restoration else anatomy
        return {"anatomy": anatomy, "edges": edges, "restored_anatomy": restored, "phi": self.decoder(restored, z)}

    def restore(self, edges: torch.Tensor) -> torch.Tensor:
        """Restored anatomy logits (N, K, H, W) from edges (N, K, H, W): one pass, or
        ``restoration_passes`` passes that each hide one set of squares of the edge map (square
        (i, j) in pass (i + j) mod P), each pixel's logits taken from the pass that hid it."""
        passes, block = self.config.restoration_passes, self.config.restoration_block
        if passes <= 1:
            return self.restorer(edges)
        n, _, h, w = edges.shape
        rows = torch.arange(h, device=edges.device) // block
        cols = torch.arange(w, device=edges.device) // block
        group = ((rows[:, None] + cols[None, :]) % passes)[None, None]              # (1, 1, H, W)
        hidden = torch.cat([edges * (group != p).to(edges.dtype) for p in range(passes)])  # (P N, K, H, W)
        logits = self.restorer(hidden).view(passes, n, -1, h, w)
        return torch.gather(logits, 0, group.expand(1, n, logits.shape[2], h, w))[0]
