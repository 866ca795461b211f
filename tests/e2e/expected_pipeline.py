"""Writes a pipeline of one tokenize stage per (option set, dataset) of an
expected_*.json made by the LLaMA-Factory image oracles, each with that set's
parameters; argv[2] (optional) is a template every stage names."""
import json
import sys

FOLDERS = {"demo": ("data", "mllm_demo"), "edge": ("edge", "edge_sharegpt, edge_alpaca")}
template = "\n\ttemplate = %s" % sys.argv[2] if len(sys.argv) > 2 else ""
for config, stages in json.load(open(sys.argv[1])).items():
    for stage, spec in stages.items():
        name = "out/%s__%s" % (config.replace(",", "_").replace("=", "_"), stage)
        print("%s: tokenize model %s%s\n\tdataset = %s" % (name, FOLDERS[stage][0], template, FOLDERS[stage][1]))
        for key, value in spec["parameters"].items():
            print("\t%s = %s" % (key, value))
        print()
