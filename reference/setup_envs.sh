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

extract() {  # extract() <mirror dir> <dest>: the code/text files of HEAD (media skipped; some media
  local repo=$1 dest=$2 files  # blobs are missing from the mirrors, which makes a plain `git archive HEAD` fail)
  rm -rf "$dest"; mkdir -p "$dest"
  files=$(git -C "$repo" ls-tree -r HEAD | while read -r _mode _type hash path; do
            case "$path" in *.png|*.jpg|*.jpeg|*.gif|*.mp4|*.svg) continue ;; esac
            if git -C "$repo" cat-file -e "$hash" 2>/dev/null; then printf '%s\n' "$path"; fi
          done)
  printf '%s\n' "$files" | xargs git -C "$repo" archive HEAD -- 2>/dev/null | tar -x -i -C "$dest"
  echo "extracted $(git -C "$repo" rev-parse --short HEAD) -> $dest"
}

extract "$MIRRORS/Victorwz+LLaVA-Unified/repo" "$REFENV/src/LLaVA-Unified"
extract "$MIRRORS/Victorwz+MLM_Filter/repo" "$REFENV/src/MLM_Filter"
extract "$MIRRORS/hanhuang22+AITQE/repo" "$REFENV/src/AITQE"

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
