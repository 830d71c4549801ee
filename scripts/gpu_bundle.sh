#!/usr/bin/env bash
# Prepares, on this machine, what scripts/gpu_check.sh needs on a bare GPU machine (its image has Python 3.12,
# torch, accelerate, transformers and many common packages, but no diffusers and no network):
#   .whl/  wheels of the project's runtime dependencies at requirements.lock's versions, for Python 3.12 on
#          x86-64, less what the GPU image already holds (listed below), bitsandbytes trimmed to its CUDA 13
#          and CPU libraries (the whole wheel is 42 MB; the device tool carries 64 MiB in all);
#   .gpu/  ../shared's full-size SDXL configs and 12 photos of one person (../shared does not travel), and
#          diffusers' reference trainer when third_party/ holds it (scripts/bench_vs_reference.py).
# Neither folder is committed (.gitignore). Then, with the device tool:
#   run(command="bash scripts/gpu_check.sh", carry=[".whl", ".gpu"], timeout_s=560)
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${HEADSHOTS_SHARED:-../shared}
BIN=.venv/bin
# On the GPU image already, at versions that serve (the project's own key libraries are carried anyway).
ON_IMAGE='^(nvidia-|cuda-)|^(torch|torchvision|triton|numpy|pandas|pyarrow|pillow|sympy|networkx|mpmath|setuptools|jinja2|markupsafe|packaging|psutil|protobuf|pyyaml|regex|requests|urllib3|idna|certifi|charset-normalizer|filelock|fsspec|tqdm|typing-extensions|xxhash|zipp|click|typer|shellingham|rich|pygments|markdown-it-py|mdurl|anyio|h11|httpcore|httpx|hf-xet|python-dateutil|six)=='
# Logging to W&B is off in the GPU check: wandb (20 MB with its service binary) and its exporters stay behind.
NOT_NEEDED='^(wandb|opentelemetry-|googleapis-common-protos)'
rm -rf .whl .gpu && mkdir -p .whl .gpu/photos
$BIN/uv pip compile pyproject.toml -c requirements.lock --python-version 3.12 --python-platform x86_64-manylinux_2_28 \
    --no-header --no-annotate -q -o .whl/closure.txt
grep -v -E "$ON_IMAGE" .whl/closure.txt | grep -v -E "$NOT_NEEDED" > .whl/carry.txt
cat requirements-nodeps.txt | grep -v '^#' >> .whl/carry.txt
$BIN/pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any \
    -d .whl -r .whl/carry.txt 2>&1 | grep -v '^WARNING: Location' || true
# bitsandbytes ships one library per CUDA release; the GPU image's torch is a CUDA 13 build.
$BIN/python - <<'PY'
import pathlib, re, zipfile
for wheel in pathlib.Path(".whl").glob("bitsandbytes-*.whl"):
    keep = lambda name: not re.search(r"libbitsandbytes_(cuda1[0-2]\d|rocm\d+)\.so$", name)
    trimmed = wheel.with_suffix(".trimmed")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(trimmed, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            if not keep(item.filename):
                continue
            data = src.read(item)
            if item.filename.endswith(".dist-info/RECORD"):
                data = "".join(l for l in data.decode().splitlines(True) if keep(l.split(",")[0])).encode()
            dst.writestr(item, data)
    trimmed.replace(wheel)
PY
rm .whl/closure.txt
cp -r "$SHARED/models/sdxl-base-1.0-config" .gpu/
# diffusers' reference trainer (Apache-2.0, never committed): gpu_check.sh puts it back in third_party/.
REFERENCE=third_party/diffusers_examples/train_dreambooth_lora_sdxl.py
if [ -f "$REFERENCE" ]; then mkdir -p .gpu/reference && cp "$REFERENCE" .gpu/reference/
else echo "no $REFERENCE: the reference part will be skipped (see scripts/bench_vs_reference.py for the copy)"; fi
ls "$SHARED"/faces/georgia-tech/s01/*.jpg | head -12 | xargs -I{} cp {} .gpu/photos/
echo "to carry: .whl $(du -sm .whl | cut -f1) MiB, .gpu $(du -sm .gpu | cut -f1) MiB (the device tool carries 64 MiB in all)"
