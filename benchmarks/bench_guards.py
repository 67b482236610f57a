"""Guards benchmarks (issue 10 items 1-2, issue 13 item 6), printed in one run:

1. The patch corpus (tests/patch_corpus): unsafe refused n/n, gaming refused n/n, honesty refused n/n,
   honest accepted n/n; target: all n/n.
2. Review time of a ~1,000-line script (the corpus's training scripts and examples/ concatenated) with a
   one-line fix, against `ast.parse` of the same script measured in the same run; target <= 40x
   (a review parses both versions and runs every rule; on this machine 40x parse is well under 1 s).
"""

from __future__ import annotations

import ast
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).parent))
from _util import best_of, report  # noqa: E402
from test_guards_corpus import CASES, tally  # noqa: E402

from twinkle_auto.monitor.guards import review_patch  # noqa: E402

SOURCES = [
    ROOT / "examples" / "tiny" / "train.py",
    ROOT / "examples" / "char_transformer" / "train.py",
    ROOT / "examples" / "hf_trainer" / "train.py",
    ROOT / "tests" / "patch_corpus" / "scripts" / "mlp.py",
    ROOT / "tests" / "patch_corpus" / "scripts" / "qlora.py",
    ROOT / "tests" / "patch_corpus" / "scripts" / "trl_sft.py",
]
FIX = ("        loss = F.cross_entropy(logits, yb)\n", "        loss = F.cross_entropy(logits, yb.long())\n")


def big_script() -> str:
    """Real training scripts one after another (without their `from __future__` lines, which must be first)."""
    parts = [
        "\n".join(line for line in path.read_text().splitlines() if not line.startswith("from __future__"))
        for path in SOURCES
    ]
    return "\n".join(parts) + "\n"


def main() -> int:
    ok = True
    figures = tally(CASES)
    verbs = {"honest": "accepted"}
    for kind in ("unsafe", "gaming", "honesty", "honest"):
        right, total = figures.get(kind, (0, 0))
        print(f"corpus: {kind} {verbs.get(kind, 'refused')} {right}/{total}")
        ok &= right == total and total > 0

    old = big_script()
    new = old.replace(*FIX, 1)
    assert new != old, "the fix anchor is missing from the benchmark script"
    lines = old.count("\n")
    parse_time = best_of(lambda: ast.parse(old), repeats=7)
    review_time = best_of(lambda: review_patch(old, new, failing_lines=[1]), repeats=5)
    print(
        f"review of a {lines}-line script: {review_time * 1000:.1f} ms, ast.parse {parse_time * 1000:.1f} ms"
    )
    ok &= report(f"review / ast.parse time ({lines} lines)", review_time / parse_time, 40.0)
    ok &= report(f"review wall time ({lines} lines)", review_time, 1.0, unit="s")
    return 0 if ok else 1


if __name__ == "__main__":
    t0 = time.perf_counter()
    code = main()
    print(f"bench_guards: {time.perf_counter() - t0:.1f} s")
    raise SystemExit(code)
