"""Loads a Rampart multimodal fusion model in PyTorch (strict load_state_dict), runs it on
JSONL records and prints accuracy and the confusion matrix, to compare with
`rampart eval --model MODEL --records RECORDS --json`. Needs torch and safetensors.

  python3 scripts/check-pytorch-fusion.py runs/security-fusion/model.safetensors runs/security/test.jsonl
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from torch_models import fusion_from_rampart, records_to_tensors  # noqa: E402

path, records_path = sys.argv[1], sys.argv[2]
model, spec = fusion_from_rampart(path)
print(f"loaded {path} into FusionNet ({spec['fusion']}, {spec['modalities']}) with load_state_dict (strict)")
records = [json.loads(line) for line in open(records_path) if line.strip()]
inputs, y = records_to_tensors(records, spec["network_box"])
with torch.no_grad():
    pred = model(*inputs).argmax(1)
k = len(spec["class_names"])
print(f"PyTorch accuracy: {(pred == y).float().mean().item() * 100:.2f}% on {len(y)} records")
confusion = torch.zeros(k, k, dtype=torch.long)
confusion.index_put_((y, pred), torch.ones_like(y), accumulate=True)
print("confusion:", json.dumps(confusion.tolist()))
