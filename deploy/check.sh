#!/usr/bin/env bash
# Validates the campaign's CI workflow against the published GitHub Actions schema
# (check-jsonschema's built-in copy) and the Kubernetes Jobs against the official client's
# models. Needs python3 with venv and pip (PyPI); installs into target/deploy-check-venv.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/deploy-check-venv
if [ ! -x "$venv/bin/check-jsonschema" ] || ! "$venv/bin/python" -c "import kubernetes, yaml" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet check-jsonschema kubernetes pyyaml
fi
"$venv/bin/check-jsonschema" --builtin-schema vendor.github-workflows .github/workflows/campaign.yml
"$venv/bin/python" deploy/check.py deploy/campaign-job.yaml deploy/campaign-merge-job.yaml
