"""PyTorch's side of `cargo bench --bench layers`: the same operations at batch 128, timed the
same way (median and fastest of --samples runs after one warm-up), in milliseconds.

  .venv-bench/bin/python scripts/bench_layers_torch.py          # made by bench-vs-pytorch.sh

Rows: noise (torch.randn of one certification batch), conv1, conv2, conv2 forward+backward,
pool1 (2x2 max pooling of [128, 32, 28, 28]), pool1 forward+backward, fc1, the cnn forward.
"""
import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from torch_models import Cnn  # noqa: E402

BATCH = 128


def timed(f, samples):
    f()
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        f()
        times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times), min(times)


def backward(layer, x):
    def run():
        x.grad = None
        layer(x).sum().backward()
    return run


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--samples", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    conv1 = torch.nn.Conv2d(1, 32, 5, padding=2)
    conv2 = torch.nn.Conv2d(32, 64, 5, padding=2)
    fc1 = torch.nn.Linear(64 * 7 * 7, 1024)
    cnn = Cnn(10).eval()
    x1 = torch.rand(BATCH, 1, 28, 28)
    x2 = torch.rand(BATCH, 32, 14, 14)
    xp = torch.rand(BATCH, 32, 28, 28)
    xf = torch.rand(BATCH, 64 * 7 * 7)
    rows = []
    with torch.no_grad():
        rows.append(("noise_batch", lambda: torch.randn(BATCH, 1, 28, 28) * 0.25))
        rows.append(("conv1", lambda: conv1(x1)))
        rows.append(("conv2", lambda: conv2(x2)))
        rows.append(("pool1", lambda: F.max_pool2d(xp, 2)))
        rows.append(("fc1", lambda: fc1(xf)))
        rows.append(("cnn_forward", lambda: cnn(x1)))
        timings = [(name, timed(f, args.samples)) for name, f in rows]
    timings.append(("conv2_backward",
                    timed(backward(conv2, x2.clone().requires_grad_()), args.samples)))
    frozen = torch.nn.Conv2d(1, 32, 5, padding=2).requires_grad_(False)
    timings.append(("conv1_input_backward",
                    timed(backward(frozen, x1.clone().requires_grad_()), args.samples)))
    timings.append(("pool1_backward",
                    timed(backward(lambda x: F.max_pool2d(x, 2), xp.clone().requires_grad_()),
                          args.samples)))
    print(f"PyTorch {torch.__version__}, {args.threads} threads, batch {BATCH}")
    print("| operation | median ms | fastest ms |")
    print("| --- | --- | --- |")
    for name, (median, fastest) in timings:
        print(f"| {name} | {median:.2f} | {fastest:.2f} |")


if __name__ == "__main__":
    main()
