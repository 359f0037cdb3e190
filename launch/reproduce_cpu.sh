#!/usr/bin/env bash
# Every figure of docs/RESULTS.md, regenerated on one CPU machine (docs/RESULTS.md gives
# the wall-clock of each step on 2 cores). Each sweep resumes where it stopped; finished
# runs are not redone, so this script can be re-run after an interruption.
#
#   bash launch/reproduce_cpu.sh            # from the repository root
set -euo pipefail
cd "$(dirname "$0")/.."

for name in digits mnist cifar10; do
  python -m rsc_jax.sweep --sweep="configs/sweeps/${name}_codings.py" --workdir="runs/sweeps/${name}"
done

# E-RSCT vs plain RSC training (claim 5): digits with three seeds, the MNIST subset once.
for seed in 0 1 2; do
  out="runs/ersct_digits_seed${seed}.json"
  [[ "$seed" == 0 ]] && out="runs/ersct_digits.json"
  [[ -f "$out" ]] || python scripts/ersct_study.py --config=configs/digits.py --seed="$seed" --target=0.95 \
      --eval_every=10 --eval_examples=360 --attack_examples=360 --out="$out"
done
[[ -f runs/ersct_mnist.json ]] || python scripts/ersct_study.py --config=configs/mnist_subset.py --epochs=2 \
    --target=0.95 --eval_every=25 --eval_examples=500 --attack_examples=500 --out=runs/ersct_mnist.json

python scripts/results.py --sweeps=runs/sweeps --out=docs/results     # reads runs/ersct_*.json
