#!/usr/bin/env bash
# Regenerate every tiny checkpoint and golden under curation_pipeline_tests/fixtures/released/
# with the reference venvs made by reference/setup_envs.sh.  Deterministic: a rerun reproduces
# every file byte for byte (same machine type / versions).
set -euo pipefail
cd "$(dirname "$0")/.."
REFENV=${REFENV:-/work/refenv}
export REFENV_SRC=${REFENV_SRC:-$REFENV/src}
"$REFENV/llava/bin/python" reference/make_checkpoints.py --part llava
"$REFENV/aitqe/bin/python" reference/make_checkpoints.py --part aitqe
"$REFENV/llava/bin/python" reference/run_mlm_filter.py
"$REFENV/aitqe/bin/python" reference/run_aitqe.py
du -sh curation_pipeline_tests/fixtures/released
