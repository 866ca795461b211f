"""DeepSpeed configs as the train stage reads them (`deepspeed = FILE.json`)
against DeepSpeed's own reading. LLaMA-Factory's ds_z2, ds_z2_offload, ds_z3
and ds_z3_offload configs, written by the llamafactory package itself (its
webui's create_ds_config), give ftpipe the ZeRO stage and offload devices that
deepspeed.runtime.zero.config.DeepSpeedZeroConfig reads from them (each trains
one step on one rank of the cpu backend, where stage 3 shards nothing); a
zero_optimization key DeepSpeed forbids is refused by ftpipe too, naming it."""
import json
import os
import re
import sys

from oracle import FTPIPE, ROOT, Cases, remove_scratch, run, scratch_folder

import llamafactory.webui.common as llamafactory_webui
from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

CONFIGS = ["ds_z2_config.json", "ds_z2_offload_config.json", "ds_z3_config.json", "ds_z3_offload_config.json"]


def deepspeed_reading(config):
    zero = DeepSpeedZeroConfig(**config.get("zero_optimization", {}))
    def device(offload):  # an enum, or its text (pydantic keeps enum values)
        value = offload.device if offload is not None else "none"
        return getattr(value, "value", value)
    return "ZeRO stage %d, offload_optimizer %s, offload_param %s" % (
        int(zero.stage), device(zero.offload_optimizer), device(zero.offload_param))


def pipeline(names):
    text = ("models/tiny: init\n\tdtype = f32\n\tthreads = 1\n\n"
            "data/train.json: shell make_addition_data.sh\n\trun = sh $< train 8 > $@\n\n"
            "data/train_set: tokenize models/tiny data/train.json\n\ttemplate = plain\n\tcutoff_len = 40\n"
            "\tthreads = 1\n")
    for i, name in enumerate(names):  # a seed each, since the config stays out of the key
        text += ("\nt%d: train models/tiny data/train_set\n\tbackend = cpu\n\tthreads = 1\n\tmax_steps = 1\n"
                 "\tper_device_train_batch_size = 2\n\tseed = %d\n\tdeepspeed = %s\n" % (i, i, name))
    return text


def main():
    cases = Cases()
    folder = scratch_folder("deepspeed")
    llamafactory_webui.DEFAULT_CACHE_DIR = folder
    llamafactory_webui.create_ds_config()
    with open(os.path.join(ROOT, "examples", "quickstart", "make_addition_data.sh")) as f, \
            open(os.path.join(folder, "make_addition_data.sh"), "w") as out:
        out.write(f.read())
    with open(os.path.join(folder, "Ftpipe"), "w") as f:
        f.write(pipeline(CONFIGS))
    status, output = run([FTPIPE, "-C", folder])
    cases.check("llamafactory_configs_train", status == 0, "one step with each of %d configs" % len(CONFIGS),
                output.splitlines()[-20:])
    for i, name in enumerate(CONFIGS):
        expected = deepspeed_reading(json.load(open(os.path.join(folder, name))))
        _, log = run([FTPIPE, "-C", folder, "log", "t%d" % i])
        found = re.search(r"deepspeed %s: (ZeRO stage \d, offload_optimizer \w+, offload_param \w+)" % re.escape(name),
                          log)
        got = found.group(1) if found else None
        cases.check("reads_" + name.replace(".json", ""), got == expected, "DeepSpeed reads %s" % expected,
                    ["ftpipe read: %s" % got])

    hostile = {"zero_optimization": {"stage": 2, "offload_optimiser": {"device": "cpu"}}}
    try:
        DeepSpeedZeroConfig(**hostile["zero_optimization"])
        deepspeed_refuses = False
    except Exception:
        deepspeed_refuses = True
    with open(os.path.join(folder, "hostile.json"), "w") as f:
        json.dump(hostile, f)
    with open(os.path.join(folder, "Ftpipe"), "w") as f:
        f.write(pipeline(["hostile.json"]).replace("seed = 0", "seed = 99"))
    status, output = run([FTPIPE, "-C", folder])
    cases.check("forbidden_key_refused_by_both",
                deepspeed_refuses and status != 0 and "unknown key zero_optimization.offload_optimiser" in output,
                "DeepSpeed %s it; ftpipe %s" % ("refuses" if deepspeed_refuses else "accepts",
                                                "names it" if status != 0 else "accepts it"),
                output.splitlines()[-5:])
    remove_scratch(folder)
    return cases.finish()


if __name__ == "__main__":
    sys.exit(main())
