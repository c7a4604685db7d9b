#!/usr/bin/env bash
# The PTB table's rate-fidelity rows on one GPU, in one time-boxed lease.
#
#   bash scripts/ptb_table_gpu.sh run DATA_DIR WORK [TRAIN_MINUTES [ROWS]]   # train, then evaluate
#   bash scripts/ptb_table_gpu.sh pack WORK DEST                            # what to bring back
#
# run: every row of ROWS (default: the language model 6_lm, row 6's recipe 6_best and the rate rows)
# trains at once, each in its own process (`scripts/table.py --jobs`): these models are small and a
# step at batch 32 is bound by kernel launches, so one GPU serves them all, with CUDA MPS when the machine
# has it (the processes' kernels then run side by side instead of taking turns). Training stops after
# TRAIN_MINUTES (default 6; `--max-train-minutes`: a row not done is evaluated at its best epoch so far,
# with "finished": false); then every row is evaluated the same way (K = 500, reference LM 6_lm). WORK gets
# runs/ (the run folders), results/ (one JSON per row), table.log, and DONE at the end. EXTRA_OPTIONS (an
# environment variable) goes to table.py as well, for a quick check on the CPU, for example
# "--limit 20 --iw-samples 2 --interpolation-pairs 2".
#
# pack: WORK's small files (results, logs, each run's config, history, metrics and prior, no weights) as
# DEST/table.tgz, and, once DONE, whole run folders with their best weights, in the order of MODELS
# (default "rate_100 6_lm"), as many as fit beside it in the device tool's 64 MiB (PACK_BUDGET_MB, default
# 63): one DEST/<row>.tar.part-* set each, in 15 MB parts (cat them into one tar). A model that does not
# fit is named and left out, never cut short.
set -uo pipefail

mode=${1:?"usage: ptb_table_gpu.sh run DATA_DIR WORK [TRAIN_MINUTES [ROWS]] | pack WORK DEST"}
here=$(cd "$(dirname "$0")" && pwd)

if [ "$mode" = pack ]; then
    work=${2:?WORK}
    dest=${3:?DEST}
    mkdir -p "$dest"
    tar czf "$dest/table.tgz" -C "$work" --exclude='*.safetensors' --exclude='checkpoint-*' \
        --exclude='.tmp-*' --exclude='*.partial.json' .
    if [ -f "$work/DONE" ]; then
        budget=$((${PACK_BUDGET_MB:-63} * 1024 * 1024 - $(stat -c %s "$dest/table.tgz")))
        for row in ${MODELS:-rate_100 6_lm}; do
            [ -d "$work/runs/$row" ] || continue
            tar cf "$dest/$row.tar" -C "$work/runs" --exclude='checkpoint-*' --exclude='.tmp-*' \
                --exclude='*.partial.json' --exclude='.lock' "$row"
            size=$(stat -c %s "$dest/$row.tar")
            if [ "$size" -le "$budget" ]; then
                split -b 15M "$dest/$row.tar" "$dest/$row.tar.part-"
                budget=$((budget - size))
            else
                echo "pack: $row ($((size / 1048576)) MiB) left out: $((budget / 1048576)) MiB left of the budget"
            fi
            rm -f "$dest/$row.tar"
        done
    fi
    ls -la "$dest"
    exit 0
fi

data_dir=${2:?DATA_DIR}
work=${3:?WORK}
minutes=${4:-6}
rows=${5:-6_lm,6_best,rate_8,rate_15,rate_30,rate_60,rate_100}
jobs=$(($(tr -cd , <<<"$rows" | wc -c) + 1))
mkdir -p "$work/runs" "$work/results"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export HF_HOME=${HF_HOME:-/tmp/textvae-hf} OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
# textvae from this checkout, installed or not (a leased machine has its dependencies, not textvae).
export PYTHONPATH="$(dirname "$here")${PYTHONPATH:+:$PYTHONPATH}"
{
    date -u
    if command -v nvidia-smi >/dev/null; then nvidia-smi -L; fi
    python3 -c "import torch, transformers, datasets; print('torch', torch.__version__, 'cuda', \
torch.cuda.is_available(), 'transformers', transformers.__version__, 'datasets', datasets.__version__)"
    if command -v nvidia-cuda-mps-control >/dev/null && nvidia-cuda-mps-control -d; then
        # Kept only if a CUDA client works under it.
        if timeout 90 python3 -c "import torch; torch.ones(1, device='cuda').sum().item()"; then
            echo "CUDA MPS on"
        else
            echo quit | nvidia-cuda-mps-control
            echo "CUDA MPS off: a CUDA client failed under it"
        fi
    fi
    # shellcheck disable=SC2086  # EXTRA_OPTIONS is a list of options
    python3 "$here/table.py" --table ptb_table --rows "$rows" --jobs "$jobs" --max-train-minutes "$minutes" \
        --output-dir "$work/runs" --data-dir "$data_dir" --results-dir "$work/results" --no-progress \
        ${EXTRA_OPTIONS:-}
    echo "exit $?"
    date -u
} >>"$work/table.log" 2>&1
touch "$work/DONE"
