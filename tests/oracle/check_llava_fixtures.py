"""The LLaVA parity fixtures (tests/fixtures/llava_parity), made again here by the
script that made them (make_llava.py, with transformers on this CPU), equal the
committed ones, so that script stays honest: JSON files as values, safetensors
tensor by tensor (as check_parity_fixtures.py: names, dtypes and shapes equal,
integers exactly, floating point within 1e-6 of each tensor's largest value),
other files byte for byte."""
import os
import sys

import oracle
from check_parity_fixtures import check_remade

FIXTURES = os.path.join(oracle.FIXTURES, "llava_parity")
SCRIPT = "make_llava.py"


def main():
    cases = oracle.Cases()
    check_remade(cases, "llava parity fixtures", FIXTURES, SCRIPT)
    return cases.finish()


if __name__ == "__main__":
    sys.exit(main())
