#!/usr/bin/env bash
# Recreate the two reference ("oracle") virtualenvs OUTSIDE the repository:
#   /work/refenv/llava  transformers 4.51.2 + LLaVA-Unified 144bc93 (+ MLM_Filter 7c4cd80 scripts)
#   /work/refenv/aitqe  transformers 4.41.2 + AITQE 2810aee (no flash-attn)
# and extract the authors' code from the bare git mirrors into /work/refenv/src/.
#
# Nothing here installs into the project's own .venv.  torch is installed FIRST and pinned to the
# local CPU wheel (torch==2.13.0 resolves to /opt/wheels/torch-2.13.0+cpu-...whl through pip's
# configured find-links); the script refuses to continue with a non-CPU torch, because an unpinned
# or CUDA torch would pull gigabytes of CUDA wheels.
set -euo pipefail

REFENV=${REFENV:-/work/refenv}
MIRRORS=${MIRRORS:-/work/.mirror}
PY=${PYTHON:-python3.11}

mkdir -p "$REFENV/src"

extract() {  # extract() <mirror dir> <pinned commit> <dest>: the code/text files of that commit, which the goldens
  local repo=$1 commit=$2 dest=$3 files  # name as theirs (media skipped; some media blobs are missing from the
  # mirrors, which makes a plain `git archive` fail). A mirror without the commit is refused, never another one used
  if ! git -C "$repo" cat-file -e "$commit^{commit}" 2>/dev/null; then
    echo "refusing: $repo has no commit $commit (the one the goldens are made from)" >&2; exit 1
  fi
  rm -rf "$dest"; mkdir -p "$dest"
  files=$(git -C "$repo" ls-tree -r "$commit" | while read -r _mode _type hash path; do
            case "$path" in *.png|*.jpg|*.jpeg|*.gif|*.mp4|*.svg) continue ;; esac
            if git -C "$repo" cat-file -e "$hash" 2>/dev/null; then printf '%s\n' "$path"; fi
          done)
  printf '%s\n' "$files" | xargs git -C "$repo" archive "$commit" -- 2>/dev/null | tar -x -i -C "$dest"
  echo "extracted ${commit:0:7} -> $dest"
}

# the commits reference/run_mlm_filter.py and run_aitqe.py record in the goldens (METHODS.md's)
extract "$MIRRORS/Victorwz+LLaVA-Unified/repo" 144bc93d85606c8a155183a9f9ffb2ceb56a98f7 "$REFENV/src/LLaVA-Unified"
extract "$MIRRORS/Victorwz+MLM_Filter/repo" 7c4cd80fc1628278dcf09535b87269352c811961 "$REFENV/src/MLM_Filter"
extract "$MIRRORS/hanhuang22+AITQE/repo" 2810aeeddb2abc64545e6cb1bbfd3edfe3ef9b6b "$REFENV/src/AITQE"

install_torch() {
  local venv=$1
  "$venv/bin/pip" install -q "torch==2.13.0"
  "$venv/bin/python" - <<'EOF'
import torch, sys
if not torch.__version__.endswith("+cpu"):
    sys.exit(f"refusing: got torch {torch.__version__}, expected the 2.13.0+cpu wheel")
print("torch", torch.__version__)
EOF
}

# ---------------------------------------------------------------- llava (LLaVA-Unified / MLM-Filter)
rm -rf "$REFENV/llava"
"$PY" -m venv "$REFENV/llava"
install_torch "$REFENV/llava"
"$REFENV/llava/bin/pip" install -q \
  "transformers==4.51.2" "tokenizers==0.21.4" "huggingface_hub==0.36.2" "safetensors==0.8.0" \
  "sentencepiece==0.1.99" "protobuf==3.20.3" "accelerate==0.26.0" "einops==0.6.1" \
  "numpy==1.26.4" "pillow==13.0.0" "pandas==2.2.3" "webdataset==1.0.2" "shortuuid==1.0.13" \
  "requests" "tqdm"
# LLaVA-Unified itself, without its (GPU / training / serving) dependency pins
"$REFENV/llava/bin/pip" install -q --no-deps "$REFENV/src/LLaVA-Unified"

# ---------------------------------------------------------------- aitqe
rm -rf "$REFENV/aitqe"
"$PY" -m venv "$REFENV/aitqe"
install_torch "$REFENV/aitqe"
"$REFENV/aitqe/bin/pip" install -q \
  "transformers==4.41.2" "tokenizers==0.19.1" "huggingface-hub==0.23.1" "safetensors==0.8.0" \
  "accelerate==1.15.0" "numpy==1.26.4" "pillow==13.0.0" "requests"

"$REFENV/llava/bin/python" -c "import transformers, llava.model.builder; print('llava env ok', transformers.__version__)"
"$REFENV/aitqe/bin/python" -c "import sys; sys.path.insert(0, '$REFENV/src/AITQE'); import transformers, modeling_mm, inference; print('aitqe env ok', transformers.__version__)"
