"""The parity fixtures (tests/fixtures/parity and parity_vl), made again here by
the scripts that made them (make_parity.py, make_parity_vl.py, with
transformers and PEFT on this CPU), equal the committed ones, so that those
scripts stay honest.

Compared file by file: JSON files as values (a LoRA config's target_modules as
a set: PEFT writes a Python set's order); safetensors files tensor by tensor:
the same names, dtypes and shapes, integers exactly, floating point within
max |committed - made| <= 1e-6 * max |committed| per tensor. The committed
ones were computed on a GPU machine's CPU; float64 sums in another order round
to a float32 that differs in its last bit now and then (a relative 6e-8),
while any change of the model, the batch or the arithmetic moves values by far
more than 1e-6. Other files byte for byte. One case per architecture."""
import json
import os
import subprocess
import sys
import time

import numpy as np
from safetensors.numpy import load_file

import oracle

FIXTURE_SETS = (("parity", "make_parity.py"), ("parity_vl", "make_parity_vl.py"))
RELATIVE_LIMIT = 1e-6


def same_json(committed, made):
    a, b = json.load(open(committed)), json.load(open(made))
    for config in (a, b):
        if isinstance(config, dict) and isinstance(config.get("target_modules"), list):
            config["target_modules"] = sorted(config["target_modules"])
    return a == b, "" if a == b else "the values differ"


def same_tensors(committed, made):
    """(equal within the limit, the worst relative difference, what differs)."""
    a, b = load_file(committed), load_file(made)
    if sorted(a) != sorted(b):
        return False, 0.0, "tensor names differ: %s" % sorted(set(a) ^ set(b))
    worst, worst_name = 0.0, ""
    for name in sorted(a):
        x, y = a[name], b[name]
        if x.dtype != y.dtype or x.shape != y.shape:
            return False, 0.0, "%s: %s %s committed, %s %s made" % (name, x.dtype, x.shape, y.dtype, y.shape)
        if not np.issubdtype(x.dtype, np.floating):
            if not np.array_equal(x, y):
                return False, 0.0, "%s: integers differ" % name
            continue
        scale = float(np.abs(x).max()) if x.size else 0.0
        difference = float(np.abs(x.astype(np.float64) - y.astype(np.float64)).max()) if x.size else 0.0
        relative = difference / scale if scale > 0 else difference
        if relative > worst:
            worst, worst_name = relative, name
    if worst > RELATIVE_LIMIT:
        return False, worst, "%s: relative difference %.3g" % (worst_name, worst)
    return True, worst, ""


def committed_files(parity, script):
    for folder, _, files in os.walk(parity):
        for name in files:
            path = os.path.join(folder, name)
            if name != script:
                yield os.path.relpath(path, parity)


def check_remade(cases, label, fixtures, script):
    """One case: `script` in the fixtures folder, run again into a scratch
    folder, makes every committed file of it (and no other) equal as above."""
    out = oracle.scratch_folder(os.path.basename(fixtures))
    try:
        started = time.time()
        status, output = oracle.run([sys.executable, os.path.join(fixtures, script), out])
        if not cases.check("%s: %s runs" % (label, script), status == 0, "exit %d" % status,
                           output.splitlines()[-20:]):
            return
        print("# %s ran in %.0f s" % (script, time.time() - started))
        committed = sorted(committed_files(fixtures, script))
        made = sorted(os.path.relpath(os.path.join(folder, name), out)
                      for folder, _, files in os.walk(out) for name in files)
        problems = ["%s: %s no longer writes it" % (p, script) for p in committed if p not in made]
        problems += ["%s: made but not committed" % p for p in made if p not in committed]
        worst = 0.0
        for path in (p for p in committed if p in made):
            ours, theirs = os.path.join(fixtures, path), os.path.join(out, path)
            if path.endswith(".json"):
                equal, why = same_json(ours, theirs)
            elif path.endswith(".safetensors"):
                equal, relative, why = same_tensors(ours, theirs)
                worst = max(worst, relative)
            else:
                equal, why = open(ours, "rb").read() == open(theirs, "rb").read(), "the bytes differ"
            if not equal:
                problems.append("%s: %s" % (path, why))
        cases.check(label, not problems,
                    "%d files equal; worst relative difference %.2g (limit %g)" % (len(committed), worst,
                                                                                  RELATIVE_LIMIT)
                    if not problems else "%d files differ" % len(problems), problems)
    finally:
        oracle.remove_scratch(out)


def main():
    cases = oracle.Cases()
    for folder, script in FIXTURE_SETS:
        check_set(cases, os.path.join(oracle.FIXTURES, folder), script)
    return cases.finish()


def check_set(cases, parity, script):
    out = oracle.scratch_folder(os.path.basename(parity))
    try:
        started = time.time()
        status, output = oracle.run([sys.executable, os.path.join(parity, script), out])
        seconds = time.time() - started
        if status != 0:
            cases.fail("parity fixtures: %s" % script, "exit %d" % status, output.splitlines()[-20:])
            return
        print("# %s ran in %.0f s" % (script, seconds))
        made = {os.path.relpath(os.path.join(folder, name), out)
                for folder, _, files in os.walk(out) for name in files}
        by_architecture = {}
        for path in sorted(committed_files(parity, script)):
            by_architecture.setdefault(path.split(os.sep)[0] if os.sep in path else "", []).append(path)
        for architecture, paths in sorted(by_architecture.items()):
            problems, worst, n_tensor_files = [], 0.0, 0
            for path in paths:
                committed, regenerated = os.path.join(parity, path), os.path.join(out, path)
                if path not in made:
                    problems.append("%s: %s no longer writes it" % (path, script))
                    continue
                if path.endswith(".json"):
                    equal, why = same_json(committed, regenerated)
                elif path.endswith(".safetensors"):
                    equal, relative, why = same_tensors(committed, regenerated)
                    worst = max(worst, relative)
                    n_tensor_files += 1
                else:
                    equal = open(committed, "rb").read() == open(regenerated, "rb").read()
                    why = "the bytes differ"
                if not equal:
                    problems.append("%s: %s" % (path, why))
            extra = sorted(p for p in made if (p.split(os.sep)[0] if os.sep in p else "") == architecture
                           and p not in paths)
            problems += ["%s: made but not committed" % p for p in extra]
            name = "%s fixtures %s" % (os.path.basename(parity), architecture or "versions.json")
            cases.check(name, not problems,
                        "%d files equal; %d safetensors files, worst relative difference %.2g (limit %g)"
                        % (len(paths), n_tensor_files, worst, RELATIVE_LIMIT) if n_tensor_files else
                        "%d files equal" % len(paths) if not problems else "%d files differ" % len(problems),
                        problems)
    finally:
        oracle.remove_scratch(out)


if __name__ == "__main__":
    sys.exit(main())
