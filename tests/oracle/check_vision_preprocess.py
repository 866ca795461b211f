#!/usr/bin/env python3
"""Live parity of ftpipe's image decoding and preprocessing with Pillow and the
Hugging Face image processors (Qwen2VLImageProcessor, CLIPImageProcessor).

tests/fixtures/vision/make_fixtures.py is run into a temporary folder with the
Pillow and transformers installed here, and ftpipe's unit tests for image
decoding, resizing and preprocessing are run against that folder (through
FTPIPE_VISION_FIXTURES), so each comparison is with what the libraries compute
now, not with the committed files. Each processor case is reported by the
largest difference of its pixel values (tolerance 1e-2); then whether the
committed fixtures still equal the live ones.

    build/oracles/bin/python tests/oracle/run.py check_vision_preprocess.py   (make check-oracles builds the tests)

The committed fixtures are what the pinned Pillow 13 and transformers 5.17 make.
Prints "ok"/"not ok" per case and "N passed, N failed"; exits 1 on any failure.
"""
import filecmp
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "vision")
TESTS = ["test_image", "test_image_resize", "test_vision_preprocess"]
TOLERANCE = 1e-2


def main():
    results = []
    with tempfile.TemporaryDirectory() as live:
        subprocess.run([sys.executable, os.path.join(FIXTURES, "make_fixtures.py"), live], check=True,
                       stderr=subprocess.DEVNULL)
        for test in TESTS:
            binary = os.path.join(ROOT, "build", "asan", "tests", "formats", test)
            if not os.path.exists(binary):
                print(f"{binary} is missing: run make {os.path.relpath(binary, ROOT)}")
                return 1
            run = subprocess.run([binary], cwd=ROOT, capture_output=True, text=True,
                                 env=dict(os.environ, FTPIPE_VISION_FIXTURES=live))
            for line in run.stdout.splitlines():
                if line.startswith(("ok ", "not ok ")):
                    results.append((line.startswith("ok "), f"{test}: {line.split(' ', 2)[-1]}"))
            for match in re.finditer(r"case (\S+): largest difference from the processor (\S+)", run.stderr):
                difference = float(match.group(2))
                results.append((difference <= TOLERANCE, f"{match.group(1)} (largest difference {difference:.3g})"))
            if run.returncode != 0:
                sys.stderr.write(run.stderr)
        for sub in ("images", "decoded", "resized", "expected"):
            names = sorted(os.listdir(os.path.join(live, sub)))
            same = names == sorted(os.listdir(os.path.join(FIXTURES, sub))) and all(
                filecmp.cmp(os.path.join(live, sub, n), os.path.join(FIXTURES, sub, n), shallow=False) for n in names)
            results.append((same, f"committed fixtures {sub}/ equal the live ones"))
        same = filecmp.cmp(os.path.join(live, "cases.txt"), os.path.join(FIXTURES, "cases.txt"), shallow=False)
        results.append((same, "committed fixtures cases.txt equals the live one"))
    for ok, name in results:
        print(f"{'ok' if ok else 'not ok'} {name}")
    failed = sum(1 for ok, _ in results if not ok)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
