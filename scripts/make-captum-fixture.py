"""Writes tests/fixtures/torch-cnn-captum-ig.json: Captum's IntegratedGradients on the
PyTorch-written cnn fixture (tests/fixtures/torch-cnn.safetensors, trained a few SGD steps by
make-torch-fixture.py), for tests/explain.rs to check Rampart's integrated gradients against.

Inputs: the first four Fashion-MNIST test images (Debian's dataset-fashion-mnist, or
$RAMPART_DATA), target the model's own class, zero baseline, 50 steps, with Captum's
'gausslegendre' and 'riemann_trapezoid' rules, and Captum's convergence delta.

Run in a venv with torch, captum, safetensors and numpy (scripts/captum-venv.sh):
  "$(scripts/captum-venv.sh)" scripts/make-captum-fixture.py"""
import gzip
import json
import os
import sys

import numpy as np
import torch
from captum.attr import IntegratedGradients

sys.path.insert(0, os.path.dirname(__file__))
from safetensors.torch import load_file  # noqa: E402
from torch_models import Cnn  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..")
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "torch-cnn.safetensors")
OUT = os.path.join(ROOT, "tests", "fixtures", "torch-cnn-captum-ig.json")
STEPS = 50
METHODS = {"gauss-legendre": "gausslegendre", "riemann-trapezoid": "riemann_trapezoid"}


def fashion_test_images(n):
    for d in [os.environ.get("RAMPART_DATA"), os.path.join(ROOT, "datasets", "fashion-mnist"),
              "/usr/share/datasets/fashion-mnist"]:
        path = d and os.path.join(d, "t10k-images-idx3-ubyte.gz")
        if path and os.path.exists(path):
            with gzip.open(path) as f:
                raw = np.frombuffer(f.read(), dtype=np.uint8, offset=16)
            return torch.tensor(raw[: n * 784].reshape(n, 1, 28, 28) / 255.0, dtype=torch.float32)
    sys.exit("no Fashion-MNIST test images: run scripts/fetch-data.sh or set RAMPART_DATA")


def main():
    torch.manual_seed(0)
    model = Cnn()
    model.load_state_dict(load_file(FIXTURE))  # a plain state_dict, no Rampart metadata
    model.eval()
    x = fashion_test_images(4)
    with torch.no_grad():
        target = model(x).argmax(1)
    ig = IntegratedGradients(model)
    out = {
        "torch_version": torch.__version__,
        "captum_version": __import__("captum").__version__,
        "steps": STEPS,
        "baseline": "zero",
        "inputs": x.reshape(4, -1).tolist(),
        "targets": target.tolist(),
        "attributions": {},
        "delta": {},
    }
    for name, method in METHODS.items():
        attr, delta = ig.attribute(x, baselines=torch.zeros_like(x), target=target,
                                   n_steps=STEPS, method=method, return_convergence_delta=True)
        out["attributions"][name] = attr.detach().reshape(4, -1).tolist()
        out["delta"][name] = delta.detach().tolist()
    with open(OUT + ".tmp", "w") as f:
        json.dump(out, f)
    os.replace(OUT + ".tmp", OUT)
    print(f"wrote {OUT}: targets {out['targets']}, Captum's deltas {out['delta']}")


if __name__ == "__main__":
    main()
