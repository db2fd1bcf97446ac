"""Do two runs give the same test accuracy for every model? (docs/experiment.md: the same data in two formats)

    python scripts/compare_runs.py reports/<run A>/metrics.json reports/<run B>/metrics.json

Prints each model's test accuracy in both runs and exits 1 when any differs or the models differ.
"""

from __future__ import annotations

import json
import sys


def accuracies(path: str) -> tuple[dict[tuple, float], str]:
    with open(path) as fh:
        m = json.load(fh)
    d = m["data"].get("dataset", {})
    what = f"{d.get('name', '?')} ({d.get('format', '?')}), {' vs '.join(m['data']['binary_classes'].values())}"
    return {(r["model"], r["seed"], r["fraction"]): r["test_accuracy"] for r in m["results"]}, what


def main() -> int:
    (a, what_a), (b, what_b) = accuracies(sys.argv[1]), accuracies(sys.argv[2])
    print(f"A: {what_a}\nB: {what_b}\n{'model':<9} {'seed':>5} {'fraction':>8} {'A':>8} {'B':>8}")
    for key in sorted(set(a) | set(b)):
        print(f"{key[0]:<9} {key[1]:>5} {key[2]:>8} {a.get(key, float('nan')):>8.4f} {b.get(key, float('nan')):>8.4f}")
    same = a == b
    print("same test accuracies for every model" if same else "DIFFERENT")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
