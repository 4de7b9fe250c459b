"""Writes tests/fixtures/torch-mlp.safetensors with PyTorch (seeded init, a few SGD steps on
random data so the weights are not just the init) plus inputs and PyTorch's logits, which
tests/store.rs checks Rampart reproduces. Run: python3 scripts/make-torch-fixture.py"""
import json
import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
from torch_models import Mlp  # noqa: E402

torch.manual_seed(1234)
model = Mlp()
opt = torch.optim.SGD(model.parameters(), lr=0.05)
x, y = torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,))
for _ in range(5):
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
model.eval()
out = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")
os.makedirs(out, exist_ok=True)
# Plain state_dict, no Rampart metadata: Rampart must infer the architecture.
save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(out, "torch-mlp.safetensors"))
inputs = torch.rand(4, 1, 28, 28)
with torch.no_grad():
    logits = model(inputs)
with open(os.path.join(out, "torch-mlp-expected.json"), "w") as f:
    json.dump({"torch_version": torch.__version__,
               "inputs": inputs.reshape(4, -1).tolist(),
               "logits": logits.tolist()}, f)
print("wrote", out, "logits", logits.argmax(1).tolist())
