"""airbench96's network (Jordan, arXiv 2404.00498) at widths that keep it under 5M parameters, `AirResNet`, which
round 3 of the final recipe's sweep trains (`benchmarks/round3.py` holds its recipes). `networks.registry()`
registers its builder, `air_resnet`, beside the notebook's networks.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class Whitening(nn.Conv2d):
    """airbench's stem: a 2x2 convolution whose 24 filters whiten the image patches (the eigenvectors of their
    covariance, scaled to unit variance, with both signs). `fit_to_data` sets them; only the bias trains."""

    def __init__(self, eps: float = 5e-4):
        super().__init__(3, 2 * 3 * 2 * 2, kernel_size=2, bias=True)
        self.eps = eps  # keeps the near-zero directions from exploding
        nn.init.zeros_(self.bias)

    @torch.no_grad()
    def fit_to(self, images):
        """Set the filters from normalised images (N, 3, H, W)."""
        patches = images.float().unfold(2, 2, 1).unfold(3, 2, 1)
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, 12)  # one row per patch, (channel, y, x) order
        covariance = patches.T @ patches / len(patches)
        values, vectors = torch.linalg.eigh(covariance)
        filters = (vectors.T / (values + self.eps).sqrt()[:, None]).reshape(12, 3, 2, 2)
        self.weight.copy_(torch.cat([filters, -filters]))  # GELU keeps one sign of each: both keep all of it


class DiracConv(nn.Conv2d):
    """3x3 convolution without bias whose first `in_channels` filters start as the identity (airbench's dirac
    initialisation): a deep stack of them starts out close to a shallow one."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(in_channels, out_channels, 3, padding="same", bias=False)
        with torch.no_grad():
            nn.init.dirac_(self.weight[:in_channels])


def batch_norm(channels: int) -> nn.BatchNorm2d:
    """airbench's BatchNorm: running statistics that follow the weights quickly (momentum 0.4), tiny epsilon."""
    return nn.BatchNorm2d(channels, eps=1e-12, momentum=0.4)


class AirGroup(nn.Module):
    """airbench96's unit: a widening convolution, max pooling to half the resolution, then two convolutions
    with a residual connection around them; each convolution is followed by BatchNorm and GELU."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.widen, self.norm0 = DiracConv(in_channels, out_channels), batch_norm(out_channels)
        self.conv1, self.norm1 = DiracConv(out_channels, out_channels), batch_norm(out_channels)
        self.conv2, self.norm2 = DiracConv(out_channels, out_channels), batch_norm(out_channels)

    def forward(self, x):
        x = F.gelu(self.norm0(F.max_pool2d(self.widen(x), 2)))
        body = F.gelu(self.norm1(self.conv1(x)))
        return x + F.gelu(self.norm2(self.conv2(body)))


class AirResNet(nn.Module):
    """The whitening stem, three AirGroups (`widths`), global max pooling and a linear classifier whose logits
    are scaled by 1/9, as airbench's."""

    def __init__(self, widths=(128, 256, 352), num_classes: int = 10, scale: float = 1 / 9):
        super().__init__()
        self.whiten = Whitening()
        w1, w2, w3 = widths
        self.groups = nn.Sequential(AirGroup(self.whiten.out_channels, w1), AirGroup(w1, w2), AirGroup(w2, w3))
        self.fc = nn.Linear(w3, num_classes, bias=False)
        self.scale = scale

    def fit_to_data(self, images):
        """Set the whitening filters from normalised training images (`networks.fit_to_data`)."""
        self.whiten.fit_to(images)

    def parameter_roles(self) -> dict:
        """The whitening filters are never trained (`fit_to_data` sets them); its bias trains only for the
        recipe's first `whiten_bias_epochs` (`training.parameter_groups`)."""
        return {"frozen": [self.whiten.weight], "whitening bias": [self.whiten.bias]}

    def forward(self, x):
        out = self.groups(F.gelu(self.whiten(x)))
        return self.fc(torch.flatten(F.adaptive_max_pool2d(out, 1), 1)) * self.scale


def air_resnet(widths=(128, 256, 352)) -> AirResNet:
    """AirResNet at `widths` (its groups' channels): 4,846,648 parameters at the default."""
    return AirResNet(widths)
