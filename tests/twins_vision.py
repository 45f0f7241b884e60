"""Hand-written PyTorch twins of vision specs, written the way a person would by hand.

Attribute names follow the spec's node names, so ``state_dict`` keys are identical and
weights load both ways without a mapping (stateless nodes such as relu/pool/flatten have no
attribute).  Used by tests/test_twins_vision.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    """Twin of specs/mlp.yaml: 10 -> 5 -> 3 with a ReLU."""

    def __init__(self, hidden: int = 5, classes: int = 3) -> None:
        super().__init__()
        self.fc1 = nn.Linear(10, hidden)
        self.fc2 = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x)))


class SimpleCNN(nn.Module):
    """Twin of specs/cifar_simplecnn.yaml: conv 3->32 5x5, max-pool 2, fc 128, fc 10."""

    def __init__(self, channels: int = 32, hidden: int = 128, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, channels, 5)
        self.fc1 = nn.Linear(channels * 14 * 14, hidden)
        self.fc2 = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = torch.flatten(x, 1)
        return self.fc2(F.relu(self.fc1(x)))


class BasicBlock(nn.Module):
    """The ResNet basic block of specs/resnet_block.yaml (identity shortcut)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + x)


class SmallResNet(nn.Module):
    """Twin of specs/resnet_block.yaml: stem, ``layers`` basic blocks, global pool, linear."""

    def __init__(self, width: int = 16, layers: int = 3, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(width)
        self.body = nn.Sequential(*(BasicBlock(width) for _ in range(layers)))
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.body(F.relu(self.stem_bn(self.stem(x))))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
