"""Post-training quantization entry point: `python quantize.py --config configs/quant_int8.py ...`.

Not built yet: INT8 quantization is its own issue. This file says so plainly instead of
pretending to quantize.
"""

import sys

if __name__ == "__main__":
    print(
        "quantize.py: INT8 post-training quantization is not built yet (see the quantization issue)",
        file=sys.stderr,
    )
    sys.exit(2)
