"""The LLaVA parity fixtures (tests/fixtures/llava_parity), made again here by the
script that made them (make_llava.py, with transformers on this CPU), equal the
committed ones, so that script stays honest: JSON files as values, safetensors
tensor by tensor (as check_parity_fixtures.py: names, dtypes and shapes equal,
integers exactly, floating point within 1e-6 of each tensor's largest value),
other files byte for byte."""
import os
import sys
import time

import oracle
from check_parity_fixtures import RELATIVE_LIMIT, same_json, same_tensors

FIXTURES = os.path.join(oracle.FIXTURES, "llava_parity")
SCRIPT = "make_llava.py"


def main():
    cases = oracle.Cases()
    out = oracle.scratch_folder("llava-parity")
    try:
        started = time.time()
        status, output = oracle.run([sys.executable, os.path.join(FIXTURES, SCRIPT), out])
        if status != 0:
            cases.fail("llava parity fixtures: " + SCRIPT, "exit %d" % status, output.splitlines()[-20:])
            return cases.finish()
        print("# %s ran in %.0f s" % (SCRIPT, time.time() - started))
        committed = sorted(os.path.relpath(os.path.join(folder, name), FIXTURES)
                           for folder, _, files in os.walk(FIXTURES) for name in files if name != SCRIPT)
        made = sorted(os.path.relpath(os.path.join(folder, name), out)
                      for folder, _, files in os.walk(out) for name in files)
        problems, worst = [], 0.0
        problems += ["%s: %s no longer writes it" % (p, SCRIPT) for p in committed if p not in made]
        problems += ["%s: made but not committed" % p for p in made if p not in committed]
        for path in (p for p in committed if p in made):
            ours, theirs = os.path.join(FIXTURES, path), os.path.join(out, path)
            if path.endswith(".json"):
                equal, why = same_json(ours, theirs)
            elif path.endswith(".safetensors"):
                equal, relative, why = same_tensors(ours, theirs)
                worst = max(worst, relative)
            else:
                equal, why = open(ours, "rb").read() == open(theirs, "rb").read(), "the bytes differ"
            if not equal:
                problems.append("%s: %s" % (path, why))
        cases.check("llava parity fixtures", not problems,
                    "%d files equal; worst relative difference %.2g (limit %g)" % (len(committed), worst,
                                                                                  RELATIVE_LIMIT)
                    if not problems else "%d files differ" % len(problems), problems)
    finally:
        oracle.remove_scratch(out)
    return cases.finish()


if __name__ == "__main__":
    sys.exit(main())
