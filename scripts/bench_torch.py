"""PyTorch twin of one Rampart workload, for scripts/bench-vs-pytorch.sh.

Each workload does what the matching `rampart` command does, on the same Fashion-MNIST
images, the same model and the same settings, in one process (timed whole by the caller):

  certify     Cohen et al.'s CERTIFY (core.py) on the reference cnn: n0 selection samples,
              n estimation samples in forward batches of --batch, Clopper-Pearson bound.
  pgd         L-inf PGD with a random start on the reference cnn (step 2.5 eps / steps).
  train-cnn   standard training of the cnn (Adam 1e-3, batch 128), then test accuracy.
  train-mlp   the same for the 784-256-256-10 mlp.
  train-pgd   PGD adversarial training of the cnn (L-inf, step 2.5 eps / steps), then test
              accuracy.

Threads: torch.set_num_threads(--threads), 2 by default (this machine's cores).
Prints one line: the workload's result, so a run can be checked against Rampart's.
"""
import argparse
import gzip
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from torch_models import Cnn, Mlp, from_rampart  # noqa: E402

MEAN, STD = 0.2860, 0.3530


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    dims = magic & 0xFF
    shape = struct.unpack(">" + "I" * dims, data[4:4 + 4 * dims])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load(data_dir, split, limit, skip=1):
    prefix = "train" if split == "train" else "t10k"
    def find(name):
        for p in (os.path.join(data_dir, name), os.path.join(data_dir, name + ".gz")):
            if os.path.exists(p):
                return p
        raise SystemExit(f"bench_torch: {name} not found in {data_dir}")
    x = read_idx(find(f"{prefix}-images-idx3-ubyte"))[::skip][:limit]
    y = read_idx(find(f"{prefix}-labels-idx1-ubyte"))[::skip][:limit]
    x = torch.from_numpy(x.astype(np.float32) / 255.0).unsqueeze(1)
    return x, torch.from_numpy(y.astype(np.int64))


def lower_confidence_bound(k, n, alpha):
    from scipy.stats import beta
    return 0.0 if k == 0 else float(beta.ppf(alpha, k, n - k + 1))


def sample_noise(model, x, num, batch, sigma, classes):
    counts = torch.zeros(classes, dtype=torch.long)
    with torch.no_grad():
        while num > 0:
            b = min(batch, num)
            num -= b
            copies = x.repeat((b, 1, 1, 1))
            votes = model(copies + torch.randn_like(copies) * sigma).argmax(1)
            counts += torch.bincount(votes, minlength=classes)
    return counts


def certify(args):
    model = from_rampart(args.model)
    x, y = load(args.data, "test", args.limit, args.skip)
    certified = 0
    for i in range(len(x)):
        c0 = sample_noise(model, x[i:i + 1], args.n0, args.batch, args.sigma, 10)
        ca = int(c0.argmax())
        counts = sample_noise(model, x[i:i + 1], args.n, args.batch, args.sigma, 10)
        p = lower_confidence_bound(int(counts[ca]), args.n, args.alpha)
        certified += int(p >= 0.5 and ca == int(y[i]))
    print(f"certify: {certified}/{len(x)} correct and certified (sigma {args.sigma}, n {args.n})")


def pgd_attack(model, x, y, eps, steps, alpha):
    x_adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y)
        grad, = torch.autograd.grad(loss, x_adv)
        with torch.no_grad():
            x_adv = x_adv + alpha * grad.sign()
            x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
    return x_adv.detach()


def pgd(args):
    model = from_rampart(args.model)
    for p in model.parameters():
        p.requires_grad_(False)
    x, y = load(args.data, "test", args.limit)
    robust = 0
    for s in range(0, len(x), args.batch):
        xb, yb = x[s:s + args.batch], y[s:s + args.batch]
        adv = pgd_attack(model, xb, yb, args.eps, args.steps, 2.5 * args.eps / args.steps)
        with torch.no_grad():
            robust += int((model(adv).argmax(1) == yb).sum())
    print(f"pgd: robust accuracy {robust / len(x):.4f} on {len(x)} images")


def train(args, arch, adversarial):
    torch.manual_seed(args.seed)
    model = (Cnn if arch == "cnn" else Mlp)(10, MEAN, STD)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = load(args.data, "train", args.train_limit)
    xt, yt = load(args.data, "test", args.eval_limit)
    alpha = 2.5 * args.eps / args.steps if adversarial else 0.0
    for _ in range(args.epochs):
        model.train()
        order = torch.randperm(len(x))
        for s in range(0, len(x), 128):
            idx = order[s:s + 128]
            xb, yb = x[idx], y[idx]
            if adversarial:
                xb = pgd_attack(model, xb, yb, args.eps, args.steps, alpha)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            correct = sum(int((model(xt[s:s + 512]).argmax(1) == yt[s:s + 512]).sum())
                          for s in range(0, len(xt), 512))
    print(f"train-{arch}: test accuracy {correct / len(xt):.4f} after {args.epochs} epochs on {len(x)} images")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("workload", choices=["certify", "pgd", "train-cnn", "train-mlp", "train-pgd"])
    p.add_argument("--data", required=True, help="folder with the Fashion-MNIST IDX files")
    p.add_argument("--model", default="models/fmnist-cnn.safetensors")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--limit", type=int, default=200, help="test images (certify, pgd)")
    p.add_argument("--skip", type=int, default=1, help="every skip-th test image (certify)")
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--sigma", type=float, default=0.25)
    p.add_argument("--n0", type=int, default=100)
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--alpha", type=float, default=0.001)
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--train-limit", type=int, default=10000)
    p.add_argument("--eval-limit", type=int, default=10000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    {
        "certify": certify,
        "pgd": pgd,
        "train-cnn": lambda a: train(a, "cnn", False),
        "train-mlp": lambda a: train(a, "mlp", False),
        "train-pgd": lambda a: train(a, "cnn", True),
    }[args.workload](args)


if __name__ == "__main__":
    main()
