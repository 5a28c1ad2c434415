# Copyright (c) mmepsa contributors. All rights reserved.
"""The authors' EPSANet formulation, re-implemented plainly for parity tests.

Written independently of mmepsa (plain ``torch.nn``, no mmcv/mmengine), it
follows the original code's structure and module names step by step: four
separate SE passes, one concatenation of the raw branches reshaped to
``(N, 4, C, H, W)``, a softmax over the branch axis, and the weighted
branches re-assembled by a loop of growing concatenations that puts branch 4
first. It is the yardstick mmepsa's faster ``PSAModule`` must match.
"""
from typing import Sequence

import torch
import torch.nn as nn


class RefSEWeight(nn.Module):

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))


class RefPSA(nn.Module):

    def __init__(self,
                 inplanes: int,
                 planes: int,
                 kernels: Sequence[int] = (3, 5, 7, 9),
                 groups: Sequence[int] = (1, 4, 8, 16),
                 stride: int = 1,
                 reduction: int = 16) -> None:
        super().__init__()
        for i in range(4):
            setattr(
                self, f'conv_{i + 1}',
                nn.Conv2d(
                    inplanes,
                    planes // 4,
                    kernels[i],
                    stride=stride,
                    padding=kernels[i] // 2,
                    groups=groups[i],
                    bias=False))
        self.se = RefSEWeight(planes // 4, reduction)
        self.split_channel = planes // 4
        self.softmax = nn.Softmax(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        branches = [getattr(self, f'conv_{i + 1}')(x) for i in range(4)]
        feats = torch.cat(branches, dim=1)
        feats = feats.view(n, 4, self.split_channel, feats.shape[2],
                           feats.shape[3])
        se = torch.cat([self.se(b) for b in branches], dim=1)
        attention = self.softmax(se.view(n, 4, self.split_channel, 1, 1))
        weighted = feats * attention
        out = None
        for i in range(4):
            part = weighted[:, i, :, :]
            out = part if out is None else torch.cat((part, out), 1)
        return out


class RefBlock(nn.Module):
    expansion = 4

    def __init__(self,
                 inplanes,
                 planes,
                 stride=1,
                 downsample=None,
                 reduction=16):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = RefPSA(planes, planes, stride=stride, reduction=reduction)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class RefEPSANet(nn.Module):
    """The authors' classifier: stem, 4 stages, avgpool, fc."""

    def __init__(self,
                 layers=(3, 4, 6, 3),
                 num_classes=1000,
                 width=64,
                 reduction=16):
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        for i, n in enumerate(layers):
            setattr(
                self, f'layer{i + 1}',
                self._make_layer(width * 2**i, n, 1 if i == 0 else 2,
                                 reduction))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width * 8 * 4, num_classes)

    def _make_layer(self, planes, blocks, stride, reduction):
        downsample = None
        if stride != 1 or self.inplanes != planes * 4:
            downsample = nn.Sequential(
                nn.Conv2d(
                    self.inplanes, planes * 4, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * 4))
        layers = [
            RefBlock(self.inplanes, planes, stride, downsample, reduction)
        ]
        self.inplanes = planes * 4
        layers += [
            RefBlock(self.inplanes, planes, reduction=reduction)
            for _ in range(1, blocks)
        ]
        return nn.Sequential(*layers)

    def stages(self, x):
        """The four stage outputs (what a detector's FPN receives)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outs = []
        for i in range(4):
            x = getattr(self, f'layer{i + 1}')(x)
            outs.append(x)
        return outs

    def forward(self, x):
        x = self.stages(x)[-1]
        return self.fc(torch.flatten(self.avgpool(x), 1))


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every parameter and BN statistic non-trivial random values, so
    that a parity check cannot pass by symmetry (e.g. zero-init BN)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith('running_var'):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith(('running_mean', '.bias')):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif t.dim() == 1:  # BN weights
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            else:
                fan_in = t[0].numel()
                t.copy_(torch.randn(t.shape, generator=g) / fan_in**0.5)
    return model
