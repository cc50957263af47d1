"""The model settings: plain data, stored in every checkpoint, rebuilt by :func:`dal.models.build_model`."""
from __future__ import annotations

from dataclasses import dataclass

from dal.errors import ConfigError

MODEL_KINDS = ("dal", "ae", "dae", "intensity", "zscore")


@dataclass
class ModelConfig:
    """Sizes and switches of the three models (each reads the fields it needs).

    Attributes:
        kind: "dal", "ae" (plain bottleneck autoencoder), "dae" (denoising U-Net, coarse noise) or
            "intensity" (raw-intensity thresholding; nothing to train) or "zscore" (voxel-wise
            z-score against the healthy training population in MNI152 space; fitted, not trained).
        classes: anatomy channels K (background, CSF, GM, WM by default).
        channels: width of the first level of every U-Net (doubles per level).
        levels: resolution levels of every U-Net.
        restoration_channels: width of the first level of the restoration U-Net (edges of a
            one-hot map are a simpler input than a scan: half the anatomy encoder's width by default).
        code_channels: features of the imaging encoder's small CNN (the rest of ``z`` is the
            per-tissue mean and spread).
        decoder_channels: width of the decoder's modulated conv net.
        decoder_blocks: FiLM-modulated conv blocks in the decoder.
        tau: temperature of the straight-through one-hot.
        gumbel: Gumbel noise scale on the anatomy logits while training (0: none).
        onehot: hard one-hot anatomy (False: softmax, the ablation "without the one-hot").
        restoration: PHI from the anatomy restored from its edges (False: from the encoder's own
            anatomy, the ablation "without the edge restoration").
        second_view_grad: back-propagate through the anatomy of the second view too (costs one
            more U-Net backward per step; the first view's gradient suffices by default).
        auxiliary_fraction: share of a training batch that the second view's anatomy, the
            restoration and the cross-reconstruction and PHI losses see (1: the whole batch; the
            self-reconstruction and the prior always see all of it). 0.25 by default: 8 slices of
            the default batch of 32, which keeps a DAL step within twice a DAE step on this
            project's CPUs (``benchmarks/bench_models.py``).
        edge_dropout: largest fraction of the edge map's blocks zeroed while training the restoration.
        edge_dropout_block: side of a dropped block, pixels.
        anomaly_probability: chance that a training slice's anatomy gets simulated abnormal
            regions (blobs of a wrong tissue) before its edges go to the restoration, whose target
            stays the healthy anatomy (0: the restoration only learns to copy).
        anomaly_regions: at most this many such regions per slice.
        restoration_passes: at inference, restore in this many passes, each with a different
            set of ``restoration_block`` squares of the edge map hidden, every pixel taken from
            the pass that hid it (rebuilt from its surroundings); 1: one pass with every edge.
        restoration_block: side of a hidden square at inference, pixels.
        ae_latent: channels of the bottleneck autoencoder's latent (at 1/2^levels resolution).
        dae_noise_std: standard deviation of the denoising autoencoder's coarse noise.
        dae_noise_cells: the coarse noise is drawn on a grid of this many cells across the
            slice's short side and upsampled (Kascenas et al. 2022 use 16 at 128 px).
        contrasts: the z-score's healthy populations, one per contrast (set by ``dal train`` from
            the scans it fits them on; none: one population of scans of an unknown contrast).
    """

    kind: str = "dal"
    classes: int = 4
    channels: int = 16
    levels: int = 3
    restoration_channels: int = 8
    code_channels: int = 16
    decoder_channels: int = 8
    decoder_blocks: int = 2
    tau: float = 1.0
    gumbel: float = 0.0
    onehot: bool = True
    restoration: bool = True
    second_view_grad: bool = False
    auxiliary_fraction: float = 0.25
    edge_dropout: float = 0.5
    edge_dropout_block: int = 8
    anomaly_probability: float = 0.8
    anomaly_regions: int = 3
    restoration_passes: int = 1
    restoration_block: int = 16
    ae_latent: int = 4
    dae_noise_std: float = 0.2
    dae_noise_cells: int = 12
    contrasts: tuple[str, ...] = ()

    def __post_init__(self):
        if self.kind not in MODEL_KINDS:
            raise ConfigError(f"model.kind: expected one of {MODEL_KINDS}, got {self.kind!r}")
        for name in ("classes", "channels", "levels", "restoration_channels", "code_channels", "decoder_channels", "ae_latent",
                     "edge_dropout_block", "dae_noise_cells", "anomaly_regions", "restoration_passes", "restoration_block"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name}: expected a positive integer, got {getattr(self, name)}")
        if self.classes < 2:
            raise ConfigError(f"model.classes: expected at least 2, got {self.classes}")
        if not self.tau > 0:
            raise ConfigError(f"model.tau: expected a positive number, got {self.tau}")
        if not 0 < self.auxiliary_fraction <= 1:
            raise ConfigError(f"model.auxiliary_fraction: expected a fraction in (0, 1], got {self.auxiliary_fraction}")
        if len(set(self.contrasts)) != len(self.contrasts) or not all(isinstance(c, str) and c for c in self.contrasts):
            raise ConfigError(f"model.contrasts: expected distinct contrast names, got {list(self.contrasts)}")
        for name in ("edge_dropout", "anomaly_probability"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"model.{name}: expected a fraction in [0, 1], got {getattr(self, name)}")


@dataclass
class LossConfig:
    """Loss weights (DAL uses all; the autoencoders only ``reconstruction``).

    Attributes:
        reconstruction: L1 of D(A1, z1) against view 1.
        cross: L1 of D(A2, z1) against view 1 (anatomy of one view, imaging code of the other).
        phi: L1 of the pseudo-healthy image D(A_hat1, z1) against view 1.
        invariance: L1 distance of the anatomy probabilities of the two views.
        prior: KL divergence from the tissue maps to the anatomy softmax (only when the data have
            tissue maps; otherwise off, and the run says so).
        restoration: cross-entropy of the restored anatomy logits against the anatomy.
    """

    reconstruction: float = 1.0
    cross: float = 1.0
    phi: float = 1.0
    invariance: float = 0.1
    prior: float = 0.5
    restoration: float = 0.5

    def __post_init__(self):
        for name, value in vars(self).items():
            if value < 0:
                raise ConfigError(f"loss.{name}: expected a weight >= 0, got {value}")
