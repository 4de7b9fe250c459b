"""PyTorch twins of Rampart's models: same attribute names, so state dicts match.

Inputs are pixels in [0, 1], shape [N, 1, 28, 28]; normalisation (x - mean) / std happens in
forward, as in Rampart. Rampart stores mean/std in the file's metadata (`rampart.spec`), not
as tensors, so `load_state_dict` sees only the layers.
"""
import json

import torch
import torch.nn as nn
import torch.nn.functional as F


class Mlp(nn.Module):
    def __init__(self, num_classes=10, mean=0.0, std=1.0):
        super().__init__()
        self.fc1 = nn.Linear(784, 256)
        self.fc2 = nn.Linear(256, 256)
        self.fc3 = nn.Linear(256, num_classes)
        self.mean, self.std = mean, std

    def forward(self, x):
        x = torch.flatten((x - self.mean) / self.std, 1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class Cnn(nn.Module):
    """Madry et al. (2018) MNIST network."""

    def __init__(self, num_classes=10, mean=0.0, std=1.0):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, 5, padding=2)
        self.fc1 = nn.Linear(64 * 7 * 7, 1024)
        self.fc2 = nn.Linear(1024, num_classes)
        self.mean, self.std = mean, std

    def forward(self, x):
        x = (x - self.mean) / self.std
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


def from_rampart(path):
    """Builds the module a Rampart file describes and loads its weights strictly."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(path, "pt") as f:
        meta = f.metadata() or {}
    spec = json.loads(meta.get("rampart.spec", '{"arch": "mlp", "num_classes": 10, "mean": 0, "std": 1}'))
    cls = {"mlp": Mlp, "cnn": Cnn}[spec["arch"]]
    model = cls(spec["num_classes"], spec["mean"], spec["std"])
    model.load_state_dict(load_file(path))
    return model.eval()
