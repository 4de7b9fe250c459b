"""PyTorch side of the AutoAttack parity check (scripts/parity-autoattack.sh): torchattacks'
AutoAttack on the first N Fashion-MNIST test images, for `rampart evaluate --limit N` to be
compared with.

It writes, as JSON (--out):
- clean_accuracy;
- the standard version's attacks chained as torchattacks' MultiAttack chains them (each attack
  sees only the points every earlier one failed on), with AutoAttack's (Croce & Hein 2020)
  budgets: APGD-CE (--steps, default 100, 1 restart), APGD-T (9 target classes, --steps each),
  FAB-T (9 targets, --steps each), Square (--queries, default 5000): `after_each` (robust
  accuracy after apgd-ce, apgd-t, fab-t, square) and `robust_accuracy` (the full standard);
  then again without FAB-T (Rampart has none), Square running straight after APGD-T:
  `after_each_without_fab` and `robust_accuracy_without_fab`. Rampart's `evaluate --version
  standard` is the latter;
- torchattacks.AutoAttack(model, norm, eps, version='standard', n_classes=10, seed) run as it
  is (`torchattacks_autoattack`), with the points its MultiAttack has left after each attack.
  Note that it leaves APGD, APGD-T and FAB at torchattacks' default of 10 steps, not
  AutoAttack's 100: a weaker attack than the reference;
- per example, which attack broke it ("clean" when the clean image is already misclassified,
  null when nothing did), for both chains, and the seconds each attack took.

Every attack reseeds torch's generator with --seed (default 0) when it starts, as
torchattacks does. Labels are the dataset's. Robust accuracy is over all N examples.

  .venv-torch/bin/python scripts/parity-autoattack.py --model runs/parity/torch-mlp-at.safetensors \
      --eps 0.1 --norm Linf --limit 1000 --out runs/parity/torchattacks.json [--data DIR]
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_models import from_rampart  # noqa: E402

import importlib.util  # noqa: E402

_spec = importlib.util.spec_from_file_location(
    "train_torch_at", os.path.join(os.path.dirname(os.path.abspath(__file__)), "train-torch-at.py"))
_train = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_train)
data_dir, load = _train.data_dir, _train.load

import torchattacks  # noqa: E402
from torchattacks import APGD, APGDT, FAB, Square  # noqa: E402


def predict(model, x, batch=1000):
    with torch.no_grad():
        return torch.cat([model(x[i:i + batch]).argmax(1) for i in range(0, len(x), batch)])


def chain(model, named, x, y, broken_by=None, start=None):
    """torchattacks' MultiAttack.forward with bookkeeping: each attack runs on the points all
    earlier ones failed on (`start`: those indices; default all), and a point counts as broken
    when the model misclassifies the attack's output. Returns the still-robust indices after
    each attack, the per-example record and each attack's seconds."""
    n = len(y)
    fails = torch.arange(n) if start is None else start.clone()
    broken_by = [None] * n if broken_by is None else list(broken_by)
    after, seconds = [], []
    for name, attack in named:
        t = time.time()
        if len(fails) > 0:
            adv = attack(x[fails], y[fails])
            corrects = predict(model, adv) == y[fails]
            for i in fails[~corrects].tolist():
                if broken_by[i] is None:
                    broken_by[i] = name
            fails = fails[corrects]
        seconds.append(time.time() - t)
        after.append(fails.clone())
        print(f"  {name:8s} robust {len(fails)}/{n} ({100 * len(fails) / n:.2f}%), "
              f"{seconds[-1]:.1f} s", flush=True)
    return after, broken_by, seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--eps", type=float, required=True)
    ap.add_argument("--norm", default="Linf", type=lambda s: {"linf": "Linf", "l2": "L2"}[s.lower()],
                    help="Linf or L2")
    ap.add_argument("--limit", type=int, default=1000, help="first N test images")
    ap.add_argument("--out", required=True, help="JSON report to write")
    ap.add_argument("--data", default=None, help="Fashion-MNIST directory")
    ap.add_argument("--steps", type=int, default=100, help="APGD, APGD-T and FAB-T iterations (AutoAttack: 100)")
    ap.add_argument("--queries", type=int, default=5000, help="Square queries (AutoAttack: 5000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-torchattacks-autoattack", action="store_true",
                    help="skip the torchattacks.AutoAttack call (10-step APGD) and its check")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    directory = data_dir(args.data)
    model = from_rampart(args.model)
    x, y = load(directory, "test")
    x, y = x[:args.limit], y[:args.limit]
    n = len(y)
    classes = model.fc3.out_features if hasattr(model, "fc3") else model.fc2.out_features
    clean_correct = predict(model, x) == y
    clean = clean_correct.sum().item() / n
    print(f"{args.model}: clean accuracy {100 * clean:.2f}% on the first {n} test images of {directory}")
    start_all = time.time()

    def suite(steps, with_fab):
        named = [
            ("apgd-ce", APGD(model, norm=args.norm, eps=args.eps, steps=steps, n_restarts=1,
                             seed=args.seed, loss="ce")),
            ("apgd-t", APGDT(model, norm=args.norm, eps=args.eps, steps=steps, n_restarts=1,
                             seed=args.seed, n_classes=classes)),
        ]
        if with_fab:
            named.append(("fab-t", FAB(model, norm=args.norm, eps=args.eps, steps=steps, n_restarts=1,
                                       seed=args.seed, multi_targeted=True, n_classes=classes)))
        named.append(("square", Square(model, norm=args.norm, eps=args.eps, n_queries=args.queries,
                                       n_restarts=1, seed=args.seed)))
        return named

    def figures(names, after):
        return [{"attack": a, "robust_accuracy": len(f) / n} for a, f in zip(names, after)]

    # The standard version with FAB-T, then Square again on APGD-T's survivors without FAB-T.
    print(f"standard ({args.norm}, eps {args.eps}, {args.steps} steps, {args.queries} queries):", flush=True)
    full = suite(args.steps, with_fab=True)
    after, broken, secs = chain(model, full, x, y)
    names = [a for a, _ in full]
    if torch.equal(after[2], after[1]):
        # FAB-T broke nothing: Square would see the same points with the same seed.
        print("without fab-t: the same as with it (fab-t broke nothing)", flush=True)
        after_sq, secs_sq = after[3:], [None]
        broken_nf = list(broken)
    else:
        print("without fab-t: square on apgd-t's survivors", flush=True)
        sq = suite(args.steps, with_fab=False)[-1:]
        broken_nf0 = [b if b in ("apgd-ce", "apgd-t") else None for b in broken]
        after_sq, broken_nf, secs_sq = chain(model, sq, x, y, broken_nf0, start=after[1])
    after_nf = after[:2] + after_sq
    for i in range(n):
        if not clean_correct[i]:
            broken[i] = broken_nf[i] = "clean"

    report = {
        "model": args.model,
        "data": directory,
        "examples": n,
        "norm": args.norm,
        "epsilon": args.eps,
        "seed": args.seed,
        "steps": args.steps,
        "queries": args.queries,
        "n_classes": classes,
        "torch": torch.__version__,
        "torchattacks": torchattacks.__version__,
        "threads": args.threads,
        "clean_accuracy": clean,
        "robust_accuracy": len(after[-1]) / n,
        "after_each": figures(names, after),
        "robust_accuracy_without_fab": len(after_nf[-1]) / n,
        "after_each_without_fab": figures(["apgd-ce", "apgd-t", "square"], after_nf),
        "seconds": dict(zip(names, secs), square_without_fab=secs_sq[0]),  # None: reused
        "per_example": {"broken_by": broken, "broken_by_without_fab": broken_nf},
    }

    if not args.no_torchattacks_autoattack:
        print("torchattacks.AutoAttack(version='standard') as it is:", flush=True)
        aa = torchattacks.AutoAttack(model, norm=args.norm, eps=args.eps, version="standard",
                                     n_classes=classes, seed=args.seed)
        multi = aa._autoattack  # torchattacks.wrappers.MultiAttack
        # MultiAttack counts the points left after each attack when asked to (as its save() does).
        multi._multi_atk_records = [0.0] * (1 + len(multi.attacks))
        multi._accumulate_multi_atk_records = True
        t = time.time()
        adv = aa(x, y)
        aa_secs = time.time() - t
        left = [int(c) for c in multi._multi_atk_records[1:]]
        left += [left[-1]] * (len(multi.attacks) - len(left))  # it stops once none are left
        aa_robust = (predict(model, adv) == y).sum().item() / n
        print(f"  robust {100 * aa_robust:.2f}%, {aa_secs:.1f} s; left after each attack: {left}", flush=True)
        if left[-1] / n != aa_robust:
            sys.exit(f"MultiAttack counted {left[-1]} robust points but its output has {aa_robust * n:.0f}")
        aa_steps = {type(p).__name__: {k: getattr(p, k) for k in ("steps", "n_queries", "n_restarts")
                                        if hasattr(p, k)} for p in multi.attacks}
        report["torchattacks_autoattack"] = {
            "note": "torchattacks.AutoAttack(version='standard') unchanged: APGD, APGD-T and FAB "
                    "at torchattacks' default steps, not AutoAttack's 100",
            "budgets": aa_steps,
            "robust_accuracy": aa_robust,
            "after_each": [{"attack": a, "robust_accuracy": c / n}
                           for a, c in zip(["apgd-ce", "apgd-t", "fab-t", "square"], left)],
            "seconds": aa_secs,
        }

    report["total_seconds"] = time.time() - start_all
    out = os.path.abspath(args.out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out + ".partial", "w") as f:
        json.dump(report, f, indent=1)
        f.write("\n")
    os.replace(out + ".partial", out)
    print(f"clean {100 * clean:.2f}%  robust: standard {100 * report['robust_accuracy']:.2f}%, "
          f"without FAB-T {100 * report['robust_accuracy_without_fab']:.2f}%  "
          f"({report['total_seconds']:.0f} s) -> {args.out}")


if __name__ == "__main__":
    main()
