"""PyTorch side of `cargo bench --bench attack`: the original AutoAttack package's APGD-CE
iteration and Square query throughput, and a plain PyTorch PGD step, for the Madry cnn at
batch 256 on random inputs (images·steps/s; one forward and one backward per PGD/APGD step,
one forward per Square query). As in the Rust bench, the radius (1e-6) is too small to fool
anything, so the whole batch is attacked at every step.

Run in the PyTorch venv (scripts/pytorch-venv.sh installs torch and auto-attack):
  .venv-torch/bin/python scripts/bench-autoattack.py [--threads 2] [--repeats 5]"""
import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from torch_models import Cnn  # noqa: E402

from autoattack.autopgd_base import APGDAttack  # noqa: E402
from autoattack.square import SquareAttack  # noqa: E402

BATCH, STEPS, QUERIES = 256, 20, 20


def best(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = Cnn(10, 0.2860, 0.3530).eval()
    x = torch.rand(BATCH, 1, 28, 28)
    with torch.no_grad():
        y = model(x).argmax(1)

    def pgd():
        xa = x.clone()
        for _ in range(STEPS):
            xa.requires_grad_(True)
            loss = F.cross_entropy(model(xa), y, reduction="sum")
            (g,) = torch.autograd.grad(loss, [xa])
            xa = torch.min(torch.max(xa.detach() + 0.025 * g.sign(), x - 0.1), x + 0.1).clamp(0, 1)
        return xa

    apgd = APGDAttack(model, n_iter=STEPS, norm="Linf", eps=1e-6, device="cpu")
    apgd.init_hyperparam(x)
    square = SquareAttack(model, norm="Linf", n_queries=QUERIES, eps=1e-6, device="cpu")
    square.init_hyperparam(x)
    rows = [
        ("pgd_steps", BATCH * STEPS / best(pgd, args.repeats)),
        ("apgd_steps", BATCH * STEPS / best(lambda: apgd.attack_single_run(x, y), args.repeats)),
        ("square_queries", BATCH * QUERIES / best(lambda: square.attack_single_run(x, y), args.repeats)),
    ]
    print(f"torch {torch.__version__}, {args.threads} threads, batch {BATCH}")
    for name, rate in rows:
        print(f"{name:<16} {rate:10.1f} images·steps/s")


if __name__ == "__main__":
    main()
