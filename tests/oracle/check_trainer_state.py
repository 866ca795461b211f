#!/usr/bin/env python3
"""The checkpoints a train stage keeps (save_strategy) read as the HF Trainer's.

A pipeline trains a tiny model with LoRA (save_strategy = steps, save_total_limit
= 2, evaluation every 5 steps) and fully (save_strategy = epoch), then:
- transformers' TrainerState.load_from_json reads every trainer_state.json (each
  checkpoint-N's and the output's): the step, max_steps and the log_history
  entries up to it, the output's ending with the train summary;
- LLaMA-Factory's plot_loss (llamafactory.extras.ploting) draws the loss and
  eval_loss from it, and LlamaBoard's gen_loss_plot the loss from the output's
  trainer_log.jsonl, whose last line has the keys its progress bar reads (they
  need matplotlib);
- PEFT loads each checkpoint-N adapter onto the base model with the file's
  weights, and transformers each checkpoint-N model of the full fine-tune.
"""
import glob
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import oracle  # noqa: E402

PIPELINE = """\
models/tiny: init
\tdtype = f32
\tthreads = 1

data/train.json: shell make_addition_data.sh
\trun = sh $< train 64 > $@

data/train_set: tokenize models/tiny data/train.json
\ttemplate = plain
\tcutoff_len = 40
\tval_size = 8
\tthreads = 1

adapter: train models/tiny data/train_set
\tthreads = 1
\tlearning_rate = 1e-2
\tper_device_train_batch_size = 4
\tlogging_steps = 2
\tmax_steps = 14
\twarmup_steps = 2
\teval_strategy = steps
\teval_steps = 5
\tsave_strategy = steps
\tsave_steps = 4
\tsave_total_limit = 2

full: train models/tiny data/train_set
\tfinetuning_type = full
\tthreads = 1
\tlearning_rate = 1e-3
\tper_device_train_batch_size = 8
\tlogging_steps = 1
\tnum_train_epochs = 2
\tsave_strategy = epoch
"""


def check_states(cases, output, expected_steps, max_steps):
    from transformers import TrainerState

    for step in expected_steps + [None]:
        folder = os.path.join(output, "checkpoint-%d" % step) if step else output
        name = "%s trainer_state.json" % os.path.relpath(folder, os.path.dirname(output))
        try:
            state = TrainerState.load_from_json(os.path.join(folder, "trainer_state.json"))
        except Exception as error:  # noqa: BLE001 - any failure to load is the finding
            cases.fail(name, "TrainerState.load_from_json failed: %r" % error)
            continue
        global_step = step or max_steps
        history = state.log_history
        logged = [e["step"] for e in history]
        ended = step is None
        problems = []
        if state.global_step != global_step or state.max_steps != max_steps:
            problems.append("global_step %d, max_steps %d" % (state.global_step, state.max_steps))
        if any(s > global_step for s in logged) or logged != sorted(logged):
            problems.append("log_history steps %s" % logged)
        if not any("loss" in e and "learning_rate" in e and "grad_norm" in e for e in history):
            problems.append("no training log entry")
        if ended != ("train_loss" in history[-1]):
            problems.append("the last entry is %s" % history[-1])
        cases.check(name, not problems, "step %d, %d log_history entries%s" % (
            state.global_step, len(history), ", ending with train_loss %.4f" % history[-1]["train_loss"]
            if ended else ""), problems)


def check_plot(cases, output):
    try:
        import matplotlib  # noqa: F401 - plot_loss needs it
    except ImportError:
        cases.skip("plot_loss", "matplotlib is not in this environment (tests/oracle/requirements.txt has it)")
        return
    from llamafactory.extras.ploting import plot_loss

    from llamafactory.extras.ploting import gen_loss_plot

    plot_loss(output, keys=["loss", "eval_loss"])
    made = [os.path.exists(os.path.join(output, "training_%s.png" % key)) for key in ("loss", "eval_loss")]
    cases.check("plot_loss", all(made), "LLaMA-Factory's plot_loss drew training_loss.png and "
                "training_eval_loss.png from %s/trainer_state.json" % os.path.basename(output))
    # LlamaBoard's view of a run: the keys its get_trainer_info reads from the last line, and its loss plot
    log = [json.loads(line) for line in open(os.path.join(output, "trainer_log.jsonl"))]
    missing = [k for k in ("current_steps", "total_steps", "percentage", "elapsed_time", "remaining_time")
               if k not in log[-1]]
    figure = gen_loss_plot(log)
    plotted = len(figure.axes[0].lines[0].get_xdata()) if figure.axes and figure.axes[0].lines else 0
    logged = sum(1 for line in log if line.get("loss"))
    cases.check("gen_loss_plot", not missing and plotted == logged,
                "LlamaBoard's gen_loss_plot drew the %d logged losses of trainer_log.jsonl" % logged,
                ["missing keys: %s" % missing, "plotted %d of %d" % (plotted, logged)])


def check_adapters(cases, base, output):
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    for folder in sorted(glob.glob(os.path.join(output, "checkpoint-*"))):
        name = "peft loads %s" % os.path.relpath(folder, os.path.dirname(output))
        model = AutoModelForCausalLM.from_pretrained(base, torch_dtype=torch.float32)
        model = PeftModel.from_pretrained(model, folder)
        loaded = {k: v for k, v in model.state_dict().items() if "lora_" in k}
        saved = load_file(os.path.join(folder, "adapter_model.safetensors"))
        # PEFT names a loaded tensor ...lora_A.default.weight; the file ...lora_A.weight
        differ = [k for k, v in saved.items() if not torch.equal(loaded.get(k.replace(".weight", ".default.weight"),
                                                                            torch.empty(0)), v)]
        cases.check(name, saved and not differ, "%d LoRA tensors, as in the file" % len(saved), differ[:5])


def check_models(cases, output):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    for folder in sorted(glob.glob(os.path.join(output, "checkpoint-*"))):
        name = "transformers loads %s" % os.path.relpath(folder, os.path.dirname(output))
        model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32)
        saved = load_file(os.path.join(folder, "model.safetensors"))
        weights = model.state_dict()
        differ = [k for k, v in saved.items() if not torch.equal(weights[k], v)]
        cases.check(name, not differ, "%d tensors, as in the file" % len(saved), differ[:5])


def main():
    cases = oracle.Cases()
    folder = oracle.scratch_folder("trainer-state")
    with open(os.path.join(folder, "Ftpipe"), "w") as f:
        f.write(PIPELINE)
    with open(os.path.join(oracle.ROOT, "examples", "quickstart", "make_addition_data.sh"), "rb") as source, \
            open(os.path.join(folder, "make_addition_data.sh"), "wb") as copy:
        copy.write(source.read())
    status, output = oracle.run([oracle.FTPIPE, "-C", folder])
    if status != 0:
        cases.fail("pipeline", "ftpipe failed (exit %d)" % status, output.splitlines()[-10:])
        return cases.finish()
    adapter, full = os.path.join(folder, "adapter"), os.path.join(folder, "full")
    kept = sorted(int(p.rsplit("-", 1)[1]) for p in glob.glob(os.path.join(adapter, "checkpoint-*")))
    cases.check("save_total_limit", kept == [12, 14], "checkpoint-12 and checkpoint-14 kept of 4, 8, 12, 14",
                ["kept: %s" % kept])
    check_states(cases, adapter, kept, 14)
    check_states(cases, full, [7, 14], 14)  # 56 rows, 8 a step: epochs end at steps 7 and 14
    check_plot(cases, adapter)
    check_adapters(cases, os.path.join(folder, "models", "tiny"), adapter)
    check_models(cases, full)
    oracle.remove_scratch(folder)
    return cases.finish()


if __name__ == "__main__":
    sys.exit(main())
