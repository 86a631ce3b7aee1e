#!/usr/bin/env bash
# Issue 11's GPU targets in one command, ≤ 6 minutes on one H200; prints the targets table.
#
#   bash benchmarks/gpu_check.sh            # results under ${OUT:-runs}/gpu_check
#
# The device image has torch, torchvision, numpy, scipy, matplotlib, scikit-learn, tqdm, pyyaml but
# not tensorly / tensorly-torch: carry their wheels in .whl (ignored by git), made beforehand with
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 -d .whl tensorly==0.10.0 tensorly-torch==0.5.0
# (device tool: carry [".whl"]). Data is data=fake / synthetic batches: the machine has no network.
set -uo pipefail
cd "$(dirname "$0")/.."
if ! python3 -c "import tensorly, tltorch" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1 PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
dir=${OUT:-runs}/gpu_check
mkdir -p "$dir"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
bench="python3 -m tdecomp.cli bench --suite train --device cuda --amp bf16 --batch-sizes 128 --repeats 10"
# 1. ResNet-32×2 at 10% and WRN-28-10 at 1/15: step time / dense (bf16 autocast, batch 128), tracker.
timeout 100 $bench --models resnet32x2 --ratios 0.1 --out "$dir/resnet_eager" | tail -3
timeout 100 $bench --models wrn28_10 --ratios 0.0667 --out "$dir/wrn_eager" | tail -3
# 2. The same ResNet-32×2 step compiled (forward+loss+FD, CUDA graphs).
timeout 150 $bench --models resnet32x2 --ratios 0.1 --repeats 20 --compile reduce-overhead \
    --out "$dir/resnet_compiled" | tail -3
# 3. Whole-model SI of WRN-28-10 on the GPU (≤ 30 s), and bf16 + compile Tucker training (no NaN).
timeout 90 python3 benchmarks/gpu_targets.py si --out "$dir/si.json"
timeout 120 python3 -m tdecomp.cli train model=resnet32 model_kwargs.width=2 data=fake \
    data_kwargs.num_samples=6400 family=tucker rank=0.1 amp=bf16 compile=true channels_last=true \
    epochs=1 batch_size=128 progress=false out="$dir/tucker_bf16_compiled" 2>&1 | tail -2
python3 benchmarks/gpu_targets.py table --dir "$dir"
