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


# --- Multimodal fusion (src/multimodal) ---------------------------------------------------

TEXT_LEN, BYTES_LEN, VOCAB, BYTE_DIM = 64, 256, 4096, 32


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def tokenize(text):
    """Rampart's words: alphanumeric runs, lower-cased, FNV-1a hashed into 1..VOCAB-1."""
    import re

    words = [w for w in re.split(r"[^0-9A-Za-z]+", text) if w][:TEXT_LEN]
    return [1 + fnv1a64(w.lower().encode()) % (VOCAB - 1) for w in words]


def records_to_tensors(records, network_box):
    """The tensors Rampart's loader builds from JSONL records (dicts)."""
    import base64

    n, f = len(records), len(network_box)
    text = torch.zeros(n, TEXT_LEN, dtype=torch.long)
    raw_bytes = torch.zeros(n, BYTES_LEN, dtype=torch.long)
    hist = torch.zeros(n, 256)
    net = torch.zeros(n, f)
    present = torch.zeros(n, 3)
    for i, r in enumerate(records):
        if r.get("text") is not None:
            ids = tokenize(r["text"])
            text[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            present[i, 0] = 1
        if r.get("bytes_b64") is not None:
            b = base64.b64decode(r["bytes_b64"])
            raw_bytes[i, : min(len(b), BYTES_LEN)] = torch.tensor(list(b[:BYTES_LEN])) + 1
            hist[i] = torch.bincount(torch.tensor(list(b), dtype=torch.long), minlength=256).float() / max(len(b), 1)
            present[i, 1] = 1
        if r.get("network") is not None:
            for j, (v, (lo, hi)) in enumerate(zip(r["network"], network_box)):
                net[i, j] = (v - lo) / (hi - lo)
            present[i, 2] = 1
    labels = torch.tensor([r["label"] for r in records], dtype=torch.long)
    return (text, raw_bytes, hist, net, present), labels


class FusionNet(nn.Module):
    """Twin of Rampart's fusion model: encoders per modality, concat or gated fusion."""

    def __init__(self, spec):
        super().__init__()
        d, mods = spec["dim"], spec["modalities"]
        k, gated = len(mods), spec["fusion"] == "gated"
        self.text_embed = nn.Embedding(VOCAB, d) if "text" in mods else None
        self.text_proj = nn.Linear(d, d) if "text" in mods else None
        self.byte_embed = nn.Embedding(257, BYTE_DIM) if "bytes" in mods else None
        self.byte_conv = nn.Conv1d(BYTE_DIM, d, 5, padding=2) if "bytes" in mods else None
        self.byte_hist = nn.Linear(256, d) if "bytes" in mods else None
        self.byte_proj = nn.Linear(2 * d, d) if "bytes" in mods else None
        self.net1 = nn.Linear(len(spec["network_box"]), d) if "network" in mods else None
        self.net2 = nn.Linear(d, d) if "network" in mods else None
        self.gate_proj = nn.Linear(d, d) if gated else None
        self.gate = nn.Linear(d, 1) if gated else None
        self.head1 = nn.Linear(d + k if gated else k * d + k, d)
        self.head2 = nn.Linear(d, len(spec["class_names"]))

    def forward(self, text, raw_bytes, hist, net, present):
        hs = []
        if self.text_embed is not None:
            mask = (text > 0).float().unsqueeze(2)
            bag = (self.text_embed(text) * mask).sum(1) / mask.sum(1).clamp_min(1.0)
            hs.append((F.relu(self.text_proj(bag)), present[:, 0:1]))
        if self.byte_embed is not None:
            seq = self.byte_conv(self.byte_embed(raw_bytes).transpose(1, 2))
            mask = (raw_bytes > 0).float().unsqueeze(1)
            pooled = F.relu((seq + (mask - 1.0) * 1e4).max(2).values)
            both = torch.cat([pooled, F.relu(self.byte_hist(hist))], 1)
            hs.append((F.relu(self.byte_proj(both)), present[:, 1:2]))
        if self.net1 is not None:
            hs.append((F.relu(self.net2(F.relu(self.net1(net)))), present[:, 2:3]))
        flags = torch.cat([f for _, f in hs], 1)
        if self.gate is not None:
            scores = torch.cat([self.gate(torch.tanh(self.gate_proj(h))) for h, _ in hs], 1)
            attention = torch.softmax(scores + (flags - 1.0) * 1e4, 1)
            fused = sum(h * f * attention[:, m : m + 1] for m, (h, f) in enumerate(hs))
            fused = torch.cat([fused, flags], 1)
        else:
            fused = torch.cat([h * f for h, f in hs] + [flags], 1)
        return self.head2(F.relu(self.head1(fused)))


def fusion_from_rampart(path):
    """Builds the fusion module a Rampart file describes and loads its weights strictly."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(path, "pt") as f:
        spec = json.loads((f.metadata() or {})["rampart.fusion"])
    model = FusionNet(spec)
    model.load_state_dict(load_file(path))
    return model.eval(), spec
