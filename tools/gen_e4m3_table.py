#!/usr/bin/env python3
"""Write tests/core/data/e4m3_values.txt: every float8_e4m3fn code and the
float32 value it decodes to, as ml_dtypes defines it (the oracle of
tests/core/test_fp8.c). One line per code: "0xCC 0xFFFFFFFF" (code, float32
bit pattern), codes 0x00..0xFF in order.

    python3 tools/gen_e4m3_table.py > tests/core/data/e4m3_values.txt
"""
import sys

import ml_dtypes
import numpy as np


def main() -> None:
    codes = np.arange(256, dtype=np.uint8)
    values = codes.view(ml_dtypes.float8_e4m3fn).astype(np.float32)
    bits = values.view(np.uint32)
    out = sys.stdout
    out.write("# float8_e4m3fn code -> float32 bits, from ml_dtypes %s "
              "(tools/gen_e4m3_table.py)\n" % ml_dtypes.__version__)
    for code, b in zip(codes.tolist(), bits.tolist()):
        out.write("0x%02X 0x%08X\n" % (code, b))


if __name__ == "__main__":
    main()
