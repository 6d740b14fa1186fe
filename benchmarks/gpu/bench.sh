#!/usr/bin/env bash
# Device side, call 2 (carry .gpu2), within 30 s of call 1: join model.bin, run the bench; results in $OUT.
set -e
S=/tmp/gpustate; cat $S/model/model.bin.a .gpu2/model.bin.b > $S/model/model.bin; rm $S/model/model.bin.a
sha256sum $S/model/model.bin
D=$(dirname $(readlink $S/cu12/libcublas.so.12))
export LD_LIBRARY_PATH=$S/cu12:$D PYTHONPATH=$S/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
set -o pipefail
python3 benchmarks/bench_gpu.py run $S/data --model $S/model --batches 1 8 32 --fw-batch 16 --repeats ${REPEATS:-3} --profile ${PROFILE:-8} ${EXTRA:-} --save-json $OUT/bench_gpu.json 2>&1 | tee $OUT/bench_gpu.log
