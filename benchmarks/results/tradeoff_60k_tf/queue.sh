#!/bin/bash
# wait for u035 to finish, then stop the old queue and run the new one
while [ ! -s /tmp/r60/u035_s0.json ]; do sleep 20; done
pkill -f queue.sh; sleep 1; pkill -f "adp-s1.5"; sleep 2
cd /tmp/wt60b
export PYTHONPATH=/tmp/wt60b TF_CPP_MIN_LOG_LEVEL=3 PYTHONUNBUFFERED=1
P=/work/main/.venv/bin/python
B=benchmarks/bench_tradeoff.py
$P $B --train-samples 60000 --seeds 0 --runs dense --out /tmp/r60/dense_s0.json > /tmp/r60/dense_s0.log 2>&1
REF=$($P -c "import json; print(json.dumps(json.load(open('/tmp/r60/dense_s0.json'))['rows']['dense']['0']['val_accuracy']))")
echo "dense reference $REF"
$P $B --train-samples 60000 --seeds 0 --runs adp --adp-name adp-s2-ref --adp-policy "{\"removal_scale\": 2, \"dense_reference\": $REF}" --out /tmp/r60/adp-s2-ref_s0.json > /tmp/r60/adp-s2-ref_s0.log 2>&1
$P $B --train-samples 60000 --seeds 0 --runs uniform --uniform-widths 0.5 --out /tmp/r60/u05_s0.json > /tmp/r60/u05_s0.log 2>&1
