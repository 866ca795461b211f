"""The benchmark's peer (tests/bench/cuda_vs_torch.py) still runs: each of its
training and generation peers on the CPU with a tiny Qwen2 shape, so a script
that only runs on the GPU machine cannot rot unseen here. Checks that each
peer trains (the loss moves), that peft-bf16 really keeps its adapter in bf16,
and that generation makes exactly the tokens asked for. The torch.compile peers
(compiled, static) take minutes to compile on a CPU: they run when
ORACLE_SLOW=1, and are reported as skipped otherwise."""
import json
import os
import sys

from oracle import ROOT, Cases, remove_scratch, run, scratch_folder

PEER = os.path.join(ROOT, "tests", "bench", "cuda_vs_torch.py")
CONFIG = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 64, "intermediate_size": 128,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 512,
    "max_position_embeddings": 256, "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}


def peer(cases, name, arguments):
    status, output = run([sys.executable, PEER] + arguments + ["--device", "cpu"])
    lines = [line for line in output.splitlines() if line.startswith("{")]
    if status != 0 or not lines:
        cases.fail(name, "the peer failed (exit %d)" % status, output.splitlines()[-8:])
        return None
    return json.loads(lines[-1])


def main():
    cases = Cases()
    folder = scratch_folder("bench-peer")
    with open(os.path.join(folder, "config.json"), "w") as out:
        json.dump(CONFIG, out)
    slow = os.environ.get("ORACLE_SLOW") == "1"
    for name, adapter in (("peft", "float32"), ("peft-bf16", "bfloat16"), ("compiled", "bfloat16")):
        case = "train peer %s" % name
        if name == "compiled" and not slow:
            cases.skip(case, "torch.compile takes minutes on a CPU: run with ORACLE_SLOW=1")
            continue
        got = peer(cases, case, ["train", folder, "2", "32", "3", "--peer", name])
        if got:
            cases.check(case, got["peer"] == name and got["adapter_dtype"] == adapter and
                        got["loss_last"] != got["loss_first"] and got["tokens_per_second"] > 0,
                        "adapter in %s, loss %.4f -> %.4f" % (got["adapter_dtype"], got["loss_first"],
                                                              got["loss_last"]), [json.dumps(got)])
    got = peer(cases, "train peer with recomputation", ["train", folder, "2", "32", "3", "--recompute",
                                                       "--peer", "peft-bf16"])
    if got:
        cases.check("train peer with recomputation", got["loss_last"] != got["loss_first"],
                    "loss %.4f -> %.4f" % (got["loss_first"], got["loss_last"]), [json.dumps(got)])
    for name in ("dynamic", "static"):
        case = "generate peer %s" % name
        if name == "static" and not slow:
            cases.skip(case, "torch.compile takes minutes on a CPU: run with ORACLE_SLOW=1")
            continue
        got = peer(cases, case, ["generate", folder, "2", "8", "6", "--peer", name])
        if got:
            cases.check(case, got["peer"] == name and got["generated"] == 12,
                        "%d tokens for 2 prompts of 6 new each" % got["generated"], [json.dumps(got)])
    remove_scratch(folder)
    return cases.finish()


if __name__ == "__main__":
    sys.exit(main())
