"""Distillation entry point: `python train.py --config configs/NAME.py --workdir DIR`.

Not built yet: distillation is its own issue. This file says so plainly instead of
pretending to train.
"""

import sys

if __name__ == "__main__":
    print(
        "train.py: distillation training is not built yet (see the project's distillation issue)",
        file=sys.stderr,
    )
    sys.exit(2)
