#!/usr/bin/env bash
# Issue 5's end-to-end check, offline: fine-tune builtin:tiny on sepia-toned copies of its
# own images, then ask finexl explain, starting from the two models, what changed.
#
#     bash scripts/sepia_finetune_check.sh [WORK_DIR] [STEPS]
#
# Every step is a plain finexl command except the toning, which uses finexl's own sepia
# transform (finexl.imaging.transforms) on the generated PNGs. Writes WORK_DIR/explain.json,
# WORK_DIR/explain.html and WORK_DIR/timings.txt.
set -euo pipefail
work=${1:-/tmp/finexl-sepia-check}
steps=${2:-200}
mkdir -p "$work"
timings="$work/timings.txt"
: > "$timings"

timed() {  # timed LABEL COMMAND...: run, and append the wall time to timings.txt
    local label=$1; shift
    local start=$SECONDS
    "$@"
    echo "$label: $((SECONDS - start)) s" | tee -a "$timings"
}

# 1. The base model's own images of its prompt set (64 prompts, seeds 1000..).
timed generate finexl generate --model builtin:tiny --prompts builtin:tiny --prompt-count 64 \
    --seed-offset 1000 --batch-size 32 --out "$work/raw" --quiet

# 2. The same images toned sepia, captions kept: the fine-tuning data.
timed sepia python - "$work/raw" "$work/sepia" <<'EOF'
import shutil, sys
from pathlib import Path
from PIL import Image
from finexl.imaging import transforms
raw, out = Path(sys.argv[1]), Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
for path in sorted(raw.glob("*.png")):
    with Image.open(path) as image:
        transforms.apply(image.convert("RGB"), "sepia", 1.0).save(out / path.name)
shutil.copy(raw / "metadata.jsonl", out / "metadata.jsonl")
EOF

# 3. A full fine-tune of the tiny model on them.
timed finetune finexl finetune --model builtin:tiny --data "$work/sepia" --steps "$steps" \
    --out "$work/sepia-model" --quiet

# 4. Explain the fine-tune against its base, from the two models (prompts the tiny model
#    knows, none of them used for fine-tuning: seeds differ and the set is larger).
timed explain finexl explain --base-model builtin:tiny --personal-model "$work/sepia-model" \
    --prompts builtin:tiny --prompt-count 100 --seeds 1 --gen-batch-size 32 \
    --work "$work/generated" --json "$work/explain.json" --html "$work/explain.html"
