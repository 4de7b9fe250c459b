"""Writes the PyTorch-written fixtures that tests/artifact.rs checks Rampart reproduces:

- tests/fixtures/torch-mlp.safetensors: the mlp, a plain state_dict (Rampart infers the
  architecture), with inputs and PyTorch's logits in torch-mlp-expected.json;
- tests/fixtures/torch-cnn.safetensors: the Madry cnn (conv layout [out, in, kh, kw], padding 2,
  the C·H·W flatten before fc1), likewise, in torch-cnn-expected.json;
- tests/fixtures/torch-fusion.safetensors: the fusion twin (gated, all three modalities) with
  its spec as `rampart.fusion` metadata, records in torch-fusion-records.jsonl (mixed case and
  punctuation for the FNV-1a tokeniser, missing modalities) and PyTorch's logits in
  torch-fusion-expected.json.

Each model is seeded and takes a few SGD steps on random data so the weights are not just the
init. Run in the PyTorch venv (scripts/pytorch-venv.sh): .venv-torch/bin/python
scripts/make-torch-fixture.py [mlp|cnn|fusion ...]"""
import base64
import json
import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
from torch_models import Cnn, FusionNet, Mlp, records_to_tensors  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")


def train_a_little(model, inputs, y):
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(5):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(*inputs), y).backward()
        opt.step()
    return model.eval()


def state(model):
    return {k: v.contiguous() for k, v in model.state_dict().items()}


def image(name, cls):
    torch.manual_seed(1234)
    model = train_a_little(cls(), (torch.rand(64, 1, 28, 28),), torch.randint(0, 10, (64,)))
    # Plain state_dict, no Rampart metadata: Rampart must infer the architecture.
    save_file(state(model), os.path.join(OUT, f"torch-{name}.safetensors"))
    inputs = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        logits = model(inputs)
    with open(os.path.join(OUT, f"torch-{name}-expected.json"), "w") as f:
        json.dump({"torch_version": torch.__version__,
                   "inputs": inputs.reshape(4, -1).tolist(),
                   "logits": logits.tolist()}, f)
    print("wrote", name, "logits", logits.argmax(1).tolist())


def fusion():
    torch.manual_seed(4321)
    spec = {"class_names": ["benign", "phishing", "malware", "exfiltration"],
            "network_box": [[0.0, 1.0], [0.0, 100.0], [-1.0, 1.0]],
            "modalities": ["text", "bytes", "network"], "fusion": "gated", "dim": 8}
    texts = ["URGENT: Verify your Account-password now!!", "quarterly report, draft v2",
             "Click the link: login.example.com/confirm?id=7", None, "notes", "wire €500 today"]
    records = []
    for i, text in enumerate(texts):
        r = {"label": i % 4}
        if text is not None:
            r["text"] = text
        if i % 3 != 1:
            r["bytes_b64"] = base64.b64encode(bytes((i * 37 + j * 11) % 256 for j in range(40 + 30 * i))).decode()
        if i != 2:
            r["network"] = [0.1 * i, 10.0 * i + 3, 0.3 - 0.1 * i]
        records.append(r)
    model = FusionNet(spec)
    inputs, y = records_to_tensors(records, spec["network_box"])
    model = train_a_little(model, inputs, y)
    save_file(state(model), os.path.join(OUT, "torch-fusion.safetensors"),
              metadata={"rampart.fusion": json.dumps(spec)})
    with open(os.path.join(OUT, "torch-fusion-records.jsonl"), "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    with torch.no_grad():
        logits = model(*inputs)
    with open(os.path.join(OUT, "torch-fusion-expected.json"), "w") as f:
        json.dump({"torch_version": torch.__version__, "logits": logits.tolist()}, f)
    print("wrote fusion logits", logits.argmax(1).tolist())


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    which = sys.argv[1:] or ["mlp", "cnn", "fusion"]
    if "mlp" in which:
        image("mlp", Mlp)
    if "cnn" in which:
        image("cnn", Cnn)
    if "fusion" in which:
        fusion()
