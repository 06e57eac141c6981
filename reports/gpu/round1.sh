#!/bin/bash
# Round 1 on a lent H100: every run in parallel, one process each, from the 160 px cache.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
nvidia-smi --query-gpu=name,memory.total --format=csv
python3 -c "import torch, torchvision, timm, transformers, segmentation_models_pytorch as smp; print(torch.__version__, torchvision.__version__, timm.__version__, transformers.__version__, smp.__version__)"
R=/root/keep/r1; mkdir -p $R
C=".gpu/cache160.npz"; M=${MINUTES:-7.0}
run() { local tag=$1; shift; python3 reports/gpu/train_cached.py --cache $C --runs $R/$tag --minutes $M "$@" > $R/$tag.out 2>&1 & }
V="--model unet_vgg19 --epochs 30 --patience 8"
run vA        $V --lr 3e-4
run vA-busi   $V --lr 3e-4 --sources busbra
run vA-busbra $V --lr 3e-4 --sources busi
run vC        $V --lr 3e-4 --augment scanner
run vC-busi   $V --lr 3e-4 --augment scanner --sources busbra
run vC-busbra $V --lr 3e-4 --augment scanner --sources busi
run vB        $V --lr 1e-4
run vE        $V --lr 3e-4 --augment scanner --freeze 10
S="--model segformer_b0 --epochs 80 --patience 25 --lr 6e-4 --augment scanner"
run sS        $S
run sS-busi   $S --sources busbra
run sS-busbra $S --sources busi
run rR        --model resnet18 --epochs 100 --patience 30 --lr 2e-3 --augment scanner
sleep 90; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv; uptime
wait
for f in $R/*.out; do echo "== $f"; grep -E "best|Error|error|Traceback" $f | tail -3; done
python3 reports/gpu/pack.py $R "$OUT"
ls -la "$OUT" /root/keep
