"""The original AutoAttack package (fra31/auto-attack, Croce & Hein 2020) on the first N
Fashion-MNIST test images, for scripts/parity-autoattack.sh: its `standard` version (APGD-CE,
APGD-T, FAB-T, Square) and its `custom` version with APGD-CE, APGD-T and Square (Rampart's
standard, which has no FAB-T), each with the package's own budgets (100 iterations, 9 target
classes, 5000 queries). Writes JSON (--out) with clean accuracy, the robust accuracy after each
attack and the seconds of each version.

  .venv-torch/bin/python scripts/parity-original-autoattack.py --model M --eps 0.1 \
      --limit 1000 --out runs/parity/autoattack.json [--norm Linf|L2] [--data DIR]"""
import argparse
import importlib.util
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_models import from_rampart  # noqa: E402

from autoattack import AutoAttack  # noqa: E402

_spec = importlib.util.spec_from_file_location(
    "train_torch_at", os.path.join(os.path.dirname(os.path.abspath(__file__)), "train-torch-at.py"))
_train = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_train)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--eps", type=float, required=True)
    ap.add_argument("--norm", default="Linf", choices=["Linf", "L2"])
    ap.add_argument("--limit", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x, y = _train.load(_train.data_dir(args.data), "t10k")
    x, y = x[:args.limit], y[:args.limit]
    model = from_rampart(args.model)
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float().mean().item()
    result = {"examples": len(y), "norm": args.norm, "epsilon": args.eps, "clean_accuracy": clean}
    for version, attacks in [("custom", ["apgd-ce", "apgd-t", "square"]), ("standard", None)]:
        kwargs = {"attacks_to_run": attacks} if attacks else {}
        aa = AutoAttack(model, norm=args.norm, eps=args.eps, version=version, device="cpu",
                        verbose=False, **kwargs)
        if attacks:
            # The standard version's settings for the three attacks it shares.
            aa.apgd.n_restarts = 1
            aa.apgd_targeted.n_target_classes = 9
            aa.apgd_targeted.n_restarts = 1
            aa.square.n_queries = 5000
        started = time.perf_counter()
        with torch.no_grad():
            adv = aa.run_standard_evaluation(x, y, bs=500)
            robust = (model(adv).argmax(1) == y).float().mean().item()
        result[version] = {"attacks": aa.attacks_to_run, "robust_accuracy": robust,
                           "seconds": time.perf_counter() - started}
    tmp = args.out + ".partial"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=2)
    os.replace(tmp, args.out)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
