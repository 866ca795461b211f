"""Runs the oracle suite (make check-oracles): every tests/oracle/check_*.py, or
those named, each in its own process with this Python (the oracle environment).
Prints each check's case lines and time, the output of a check that failed or
crashed, and ends with "N passed, N failed, N skipped" (a skip is no pass).
Exit 1 when a case failed.

    build/oracles/bin/python tests/oracle/run.py [check_NAME.py ...]

A new check is one more check_*.py file: oracle.py says how it reports."""
import glob
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    checks = [os.path.join(HERE, os.path.basename(name)) for name in sys.argv[1:]] or \
        sorted(glob.glob(os.path.join(HERE, "check_*.py")))
    passed = failed = skipped = 0
    started = time.time()
    for check in checks:
        name = os.path.basename(check)
        print("--- %s" % name, flush=True)
        check_started = time.time()
        done = subprocess.run([sys.executable, check], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=HERE,
                              env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))  # no __pycache__ in the tree
        output = done.stdout.decode("utf-8", "replace")
        lines = output.splitlines()
        counts = [sum(1 for line in lines if line.startswith(prefix)) for prefix in ("ok ", "not ok ", "skip ")]
        if done.returncode != 0 and counts[1] == 0:
            counts[1] = 1  # it stopped before reporting a failure: its output says why
            print(output.rstrip())
            print("not ok %s (exit %d)" % (name, done.returncode))
        else:
            for line in lines:
                if line.startswith(("ok ", "not ok ", "skip ", "  ", "#")):
                    print(line)
        passed, failed, skipped = passed + counts[0], failed + counts[1], skipped + counts[2]
        print("--- %s: %d ok, %d not ok, %d skipped (%.0f s)" % (name, counts[0], counts[1], counts[2],
                                                                  time.time() - check_started), flush=True)
    print("oracles: %d checks in %.0f s" % (len(checks), time.time() - started))
    print("%d passed, %d failed, %d skipped" % (passed, failed, skipped))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
