#!/bin/bash
# The device run: the 60k trade-off table (vgg_small, ResNet-18 x0.25) and
# the MobileNetV2 backbone, on JAX, many processes at a time.
set -u
[ -n "${SKIP_PIP:-}" ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
ROOT=$PWD; cd $ROOT/.devdata/src; export PYTHONPATH=/tmp/site:$ROOT/.devdata/src KERAS_BACKEND=jax KERAS_ADP_DATA=$ROOT/.devdata XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3
(nvidia-smi -L; nproc; python3 -c "import jax, keras; print(jax.__version__, jax.devices(), keras.__version__)") > $OUT/env.txt 2>&1
cat $OUT/env.txt
R=/tmp/r; mkdir -p $R/vgg $R/r18 $R/bb
LIMIT=${LIMIT:-480}
timeout $LIMIT python3 benchmarks/tradeoff_parallel.py --out-dir $R/vgg --jobs ${VGG_JOBS:-12} --seeds 0 1 2 --uniform-widths 0.75 0.5 0.4 0.3 --adp 'adp={}' 'adp-s2={"removal_scale": 2}' 'adp-s2-2pt={"removal_scale": 2, "max_accuracy_drop": 0.02}' 'adp-s3-2pt={"removal_scale": 3, "max_accuracy_drop": 0.02}' -- --train-samples ${N:-60000} ${EXTRA:-} > $R/vgg/driver.log 2>&1 &
timeout $LIMIT python3 benchmarks/tradeoff_parallel.py --out-dir $R/r18 --jobs ${R18_JOBS:-3} --seeds 0 1 2 --uniform-widths 0.7 --no-paper --adp 'adp={}' -- --train-samples ${N:-60000} ${EXTRA:-} --model resnet18 --base-width 0.25 > $R/r18/driver.log 2>&1 &
timeout $LIMIT python3 benchmarks/bench_backbone.py --data idx --train-samples ${N:-60000} --epochs ${BB_EPOCHS:-10} --dense-baseline > $R/bb/backbone.log 2>&1 &
while [ "$(jobs -r | wc -l)" -gt 0 ]; do sleep 30; echo "$(date +%T) $(ls $R/vgg/*.json $R/r18/*.json 2>/dev/null | wc -l) json; $(grep -h exit $R/*/driver.log | wc -l) done"; done
pkill -f bench_tradeoff; pkill -f bench_backbone; sleep 2
tar czf $OUT/results.tgz -C /tmp r
tail -50 $R/vgg/driver.log; tail -12 $R/r18/driver.log; tail -5 $R/bb/backbone.log
