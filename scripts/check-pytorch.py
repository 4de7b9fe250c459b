"""Loads a Rampart model in PyTorch with load_state_dict (strict), prints PyTorch's test
accuracy and confusion matrix (compare with `rampart eval --json`), and writes the PyTorch
state dict back with safetensors.torch.save_file to MODEL.torch.safetensors, for Rampart to
load. Needs torch, safetensors and numpy.

  python3 scripts/check-pytorch.py runs/fmnist-cnn/model.safetensors [data-dir]
"""
import json
import gzip
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from torch_models import from_rampart  # noqa: E402

path = sys.argv[1]
data = sys.argv[2] if len(sys.argv) > 2 else "/usr/share/datasets/fashion-mnist"
model = from_rampart(path)
print(f"loaded {path} into {type(model).__name__} with load_state_dict (strict)")


def idx(name):
    p = os.path.join(data, name)
    opener = gzip.open if os.path.exists(p + ".gz") else open
    with opener(p + ".gz" if os.path.exists(p + ".gz") else p, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw[4 + 4 * ndim:], dtype=np.uint8).reshape(dims)


x = torch.tensor(idx("t10k-images-idx3-ubyte"), dtype=torch.float32).unsqueeze(1) / 255.0
y = torch.tensor(idx("t10k-labels-idx1-ubyte").astype(np.int64))
with torch.no_grad():
    pred = torch.cat([model(x[i:i + 1000]).argmax(1) for i in range(0, len(x), 1000)])
print(f"PyTorch test accuracy: {(pred == y).float().mean().item() * 100:.2f}% on {len(y)} images")
confusion = torch.zeros(10, 10, dtype=torch.long)
confusion.index_put_((y, pred), torch.ones_like(y), accumulate=True)
print("confusion:", json.dumps(confusion.tolist()))

from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

with safe_open(path, "pt") as f:
    spec = (f.metadata() or {}).get("rampart.spec")
out = path.replace(".safetensors", ".torch.safetensors")
save_file(model.state_dict(), out, metadata={"rampart.spec": spec} if spec else None)
print("wrote PyTorch state dict to", out)
