"""The N2NSkip paper's comparison at CPU scale (the README's "Study" section).

Dense, RP, N2NSkip-RP, CSP and N2NSkip-CSP at densities 10%, 5% and 2%, three seeds, on
MNIST-1D, for a deep MLP (40-256x8-10) and a VGG-style 1-D CNN (six conv-BN-ReLU layers),
all with the same recipe (Adam 1e-3, cosine, 15 epochs, batch 128). RP is expander-style
random pruning with ERK allocation, CSP is SNIP with a global threshold; the N2NSkip
variants spend half of the same budget on skip connections. Finished cells are kept in
OUT/cells, so an interrupted run resumes. Equivalent: ``n2nonnx study --full --out OUT``.

    python examples/n2nskip_study.py --out runs/study           # about an hour on 2 cores
    python examples/n2nskip_study.py --quick --out /tmp/study     # seconds
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from n2nonnx.study import STUDY_RECIPE, StudyPlan, run_study


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/study")
    parser.add_argument("--quick", action="store_true", help="one architecture, density, seed and epoch")
    args = parser.parse_args(argv)
    if args.quick:
        plan = StudyPlan(archs=["mlp"], variants=["RP", "N2NSkip-RP"], densities=[0.1], seeds=[0],
                         recipe={**STUDY_RECIPE, "epochs": 1})
    else:
        plan = StudyPlan()
    run_study(plan, args.out, progress=not args.quick)
    print(Path(args.out, "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
