"""ftpipe's exports load in PEFT and transformers as they mean, on this CPU:
tests/bench/peft_check.sh (the check that once ran only on the GPU machine)
with the oracle environment's python3. A pipeline trains two LoRA adapters on
a tiny Qwen2-shaped model, one on all seven targets and one with rsLoRA on
q_proj and v_proj, and exports each as format = peft and format = merged.
Per adapter: PeftModel.from_pretrained(base, peft export) gives ftpipe's cpu
logits (relative error < 1e-4), from_pretrained(merged export) too, and the
merged weights equal PEFT's merge_and_unload() (< 1e-5)."""
import os
import re
import sys

import oracle

SEVEN_TARGETS = "down_proj,gate_proj,k_proj,o_proj,q_proj,up_proj,v_proj"
EXPECTED = {  # adapter: (targets, rslora) as the pipeline of peft_check.sh asks
    "all": (SEVEN_TARGETS, "False"),
    "rslora_qv": ("q_proj,v_proj", "True"),
}
HEADER = re.compile(r"^(\S+) \(r (\d+), alpha (\S+), rslora (\S+), targets (\S+)\):$")


def main():
    cases = oracle.Cases()
    environment = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
                       HF_HUB_DISABLE_PROGRESS_BARS="1")
    status, output = oracle.run(["sh", os.path.join(oracle.ROOT, "tests", "bench", "peft_check.sh")],
                                env=environment)
    lines = output.splitlines()
    skipped = [line for line in lines if line.startswith("peft_check: skipped")]
    if skipped:
        cases.skip("peft exports", skipped[0].split("skipped", 1)[1].strip(" ()"))
        return cases.finish()
    adapters, current = {}, None
    for line in lines:
        header = HEADER.match(line)
        if header:
            current = header.group(1)
            adapters[current] = {"rank": header.group(2), "alpha": header.group(3), "rslora": header.group(4),
                                 "targets": header.group(5), "measured": [], "failures": []}
        elif current and line.startswith("  "):
            adapters[current]["measured"].append(line.strip())
        failed = re.match(r"^peft_check: FAILED \((\S+)\): (.*)$", line)
        if failed and failed.group(1) in adapters:
            adapters[failed.group(1)]["failures"].append(failed.group(2))
    for name, (targets, rslora) in EXPECTED.items():
        case = "peft exports %s" % name
        if name not in adapters:
            cases.fail(case, "peft_check.sh reported nothing on it (exit %d)" % status, lines[-15:])
            continue
        adapter = adapters[name]
        problems = list(adapter["failures"])
        if (adapter["targets"], adapter["rslora"]) != (targets, rslora):
            problems.append("the export has targets %s and rslora %s, the pipeline asked for %s and %s"
                            % (adapter["targets"], adapter["rslora"], targets, rslora))
        errors = [re.sub(r"^(.*?): max relative error ", "", m) for m in adapter["measured"] if "max relative" in m]
        cases.check(case, not problems and status == 0 and len(errors) == 3,
                    "targets %s, rslora %s: PeftModel vs ftpipe %s, merged export vs ftpipe %s, merged weights vs "
                    "merge_and_unload() %s" % ((adapter["targets"], adapter["rslora"]) + tuple(errors))
                    if len(errors) == 3 else "peft_check.sh measured %d of 3 errors" % len(errors),
                    problems + adapter["measured"])
    return cases.finish()


if __name__ == "__main__":
    sys.exit(main())
