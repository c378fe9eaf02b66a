"""Validates the campaign's deployment files: each Kubernetes manifest is loaded into the
official `kubernetes` Python client's models and must come back unchanged (a misspelt or
misplaced field would be dropped), and the Indexed Job's shard count must match its
completions. Run by deploy/check.sh, which also checks the GitHub Actions workflow."""

import re
import sys

import yaml
from kubernetes.client import ApiClient

MODELS = {("v1", "PersistentVolumeClaim"): "V1PersistentVolumeClaim",
          ("batch/v1", "Job"): "V1Job"}


def load(path):
    client = ApiClient()
    with open(path, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    out = []
    for i, doc in enumerate(docs):
        key = (doc.get("apiVersion"), doc.get("kind"))
        if key not in MODELS:
            sys.exit(f"{path}: document {i + 1}: unexpected {key}")
        # The client's own deserializer: the same path it takes for API answers.
        model = client._ApiClient__deserialize(doc, MODELS[key])
        back = client.sanitize_for_serialization(model)
        if back != doc:
            sys.exit(f"{path}: document {i + 1} ({key[1]}) does not survive the "
                     f"client's models:\n  file:  {doc}\n  model: {back}")
        out.append(model)
    return out


def main():
    jobs = {}
    for path in sys.argv[1:]:
        for model in load(path):
            if model.kind == "Job":
                jobs[model.metadata.name] = model
    job = jobs["stormcell-campaign"]
    spec = job.spec
    assert spec.completion_mode == "Indexed", "the campaign must be an Indexed Job"
    args = " ".join(spec.template.spec.containers[0].args)
    shards = re.search(r"--shard auto/(\d+)", args)
    assert shards, f"the campaign's pods must take their shard from the index: {args}"
    assert int(shards.group(1)) == spec.completions, (
        f"--shard auto/{shards.group(1)} but completions {spec.completions}")
    assert "$JOB_COMPLETION_INDEX" in args, "each shard must report into its own folder"
    merge = jobs["stormcell-campaign-merge"]
    assert "merge" in " ".join(merge.spec.template.spec.containers[0].args)
    print(f"ok -- {len(jobs)} Jobs load into the kubernetes client's models; "
          f"{spec.completions} indexed shards")


if __name__ == "__main__":
    main()
