"""Trains the mlp twin (scripts/torch_models.py) in PyTorch with PGD adversarial training
(Madry et al. 2018) on Fashion-MNIST and saves it as safetensors in PyTorch layout with the
metadata Rampart reads (`rampart.spec`: arch, classes, normalisation; plus a summary and
provenance), so `rampart evaluate --model OUT` opens it as it is. The AutoAttack parity check
(scripts/parity-autoattack.sh) evaluates this one file with both torchattacks and Rampart.

Training: L-inf epsilon 0.1, PGD-7 with step 2.5 * eps / 7 from a uniform random start, loss
on the adversarial batch only; Adam lr 1e-3, batch 128, seed 0; pixels in [0, 1] and the
normalisation (x - 0.2860) / 0.3530 inside the model, as Rampart's models do. At the end it
prints clean accuracy on the whole test set and PGD-20 accuracy on its first 1000 images.
About 8 s per epoch of 60000 images on one CPU core (2 epochs, 60000 images: 79.3% clean,
65.4% PGD-20).

  .venv-torch/bin/python scripts/train-torch-at.py --out runs/parity/torch-mlp-at.safetensors \
      [--epochs 2] [--train-limit N] [--eps 0.1] [--data DIR]
"""
import argparse
import gzip
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_models import Mlp  # noqa: E402

MEAN, STD = 0.2860, 0.3530


def data_dir(given):
    """The Fashion-MNIST directory, found as Rampart finds it: --data, else $RAMPART_DATA, else
    the first of datasets/fashion-mnist (relative to the working directory) and
    /usr/share/datasets/fashion-mnist that exists."""
    given = given or os.environ.get("RAMPART_DATA") or None
    if given:
        if not os.path.isdir(given):
            sys.exit(f"data directory {given} does not exist; run scripts/fetch-data.sh")
        return given
    for d in ("datasets/fashion-mnist", "/usr/share/datasets/fashion-mnist"):
        if os.path.isdir(d):
            return d
    sys.exit("no Fashion-MNIST directory found; run scripts/fetch-data.sh, or pass --data / set RAMPART_DATA")


def idx(directory, name):
    """An IDX file (gzipped preferred, as Rampart does) as a numpy array."""
    p = os.path.join(directory, name)
    gz = os.path.exists(p + ".gz")
    with (gzip.open(p + ".gz", "rb") if gz else open(p, "rb")) as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw[4 + 4 * ndim:], dtype=np.uint8).reshape(dims)


def load(directory, split):
    prefix = "train" if split == "train" else "t10k"
    x = torch.tensor(idx(directory, f"{prefix}-images-idx3-ubyte"), dtype=torch.float32).unsqueeze(1) / 255.0
    y = torch.tensor(idx(directory, f"{prefix}-labels-idx1-ubyte").astype(np.int64))
    return x, y


def pgd(model, x, y, eps, alpha, steps, random_start=True):
    """L-inf PGD on cross-entropy, inside [0, 1]."""
    xa = x.clone()
    if random_start:
        xa = (xa + torch.empty_like(xa).uniform_(-eps, eps)).clamp(0.0, 1.0)
    for _ in range(steps):
        xa.requires_grad_(True)
        loss = F.cross_entropy(model(xa), y)
        (g,) = torch.autograd.grad(loss, [xa])
        with torch.no_grad():
            xa = xa + alpha * g.sign()
            xa = torch.min(torch.max(xa, x - eps), x + eps).clamp(0.0, 1.0)
    return xa.detach()


def accuracy(model, x, y, batch=1000):
    with torch.no_grad():
        return sum((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item()
                   for i in range(0, len(x), batch)) / len(x)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="safetensors file to write")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--train-limit", type=int, default=None, help="first N training images")
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--steps", type=int, default=7)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", default=None, help="Fashion-MNIST directory")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    directory = data_dir(args.data)
    x_train, y_train = load(directory, "train")
    if args.train_limit:
        x_train, y_train = x_train[:args.train_limit], y_train[:args.train_limit]
    x_test, y_test = load(directory, "test")
    alpha = 2.5 * args.eps / args.steps

    model = Mlp(10, MEAN, STD)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    order = torch.Generator().manual_seed(args.seed)
    start = time.time()
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(x_train), generator=order)
        total, correct, loss_sum = 0, 0, 0.0
        t0 = time.time()
        for i in range(0, len(perm), args.batch):
            b = perm[i:i + args.batch]
            xb, yb = x_train[b], y_train[b]
            xa = pgd(model, xb, yb, args.eps, alpha, args.steps)
            logits = model(xa)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += len(b)
            correct += (logits.argmax(1) == yb).sum().item()
            loss_sum += loss.item() * len(b)
        model.eval()
        print(f"epoch {epoch + 1}/{args.epochs}: adversarial loss {loss_sum / total:.4f}, "
              f"adversarial train accuracy {100 * correct / total:.2f}%, "
              f"clean test accuracy {100 * accuracy(model, x_test, y_test):.2f}%, "
              f"{time.time() - t0:.1f} s", flush=True)
    train_seconds = time.time() - start

    model.eval()
    clean = accuracy(model, x_test, y_test)
    n_rob = min(1000, len(x_test))
    torch.manual_seed(args.seed)
    x_adv = pgd(model, x_test[:n_rob], y_test[:n_rob], args.eps, 2.5 * args.eps / 20, 20)
    robust = accuracy(model, x_adv, y_test[:n_rob])

    from safetensors.torch import save_file

    spec = {"arch": "mlp", "num_classes": 10, "mean": MEAN, "std": STD}
    summary = {"dataset": f"train ({directory}), PyTorch PGD-{args.steps} adversarial training, "
                          f"L-inf eps {args.eps}",
               "train_examples": len(x_train), "device": "cpu (PyTorch)", "epochs": args.epochs,
               "final_eval_accuracy": clean, "eval_examples": len(x_test),
               "train_seconds": train_seconds}
    metadata = {"rampart.spec": json.dumps(spec),
                "rampart.summary": json.dumps(summary),
                "rampart.provenance": json.dumps({"tool": f"scripts/train-torch-at.py (PyTorch {torch.__version__})"})}
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    out = os.path.abspath(args.out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    partial = out + ".partial"
    save_file(state, partial, metadata=metadata)
    os.replace(partial, out)
    print(f"clean test accuracy: {100 * clean:.2f}% on {len(x_test)} images; "
          f"PGD-20 (eps {args.eps}, step 2.5*eps/20, 1 random start) accuracy: {100 * robust:.2f}% "
          f"on the first {n_rob}; training {train_seconds:.1f} s")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
