# GPU image (README.md, GPU section): NGC PyTorch (CUDA torch, Transformer Engine, apex, cuDNN)
# + Megatron-Core + CUDA vLLM + this package, installed by scripts/install.sh exactly as it
# installs inside any NGC container: a venv with the image's site-packages, the image's pip
# constraints honoured (its torch/TE/apex are kept), vLLM built from the source of the release
# made for the image's torch, TE replaced only if outside Megatron-Core's range.
# apex comes with the base image; it is never a pip requirement (PyPI's "apex" is unrelated).
#   docker build -t megatron-pacore .            # no GPU needed to build
#   docker run --gpus all --ipc=host megatron-pacore bash tests/gpu/smoke.sh
ARG NGC_TAG=25.12-py3
FROM nvcr.io/nvidia/pytorch:${NGC_TAG}

# Kernels for Hopper (H100/H200) and Blackwell only: a shorter vLLM/TE build.
ENV TORCH_CUDA_ARCH_LIST="9.0 10.0" \
    MAX_JOBS=16 \
    PYTHONUNBUFFERED=1
WORKDIR /workspace/megatron_pacore

# --- system packages (apt) ---
# bubblewrap: the code grader's sandbox (namespaces need a container allowed to make them,
# e.g. --security-opt seccomp=unconfined, or the grader falls back and says so). Unpinned:
# the image's Ubuntu release decides the version, and any bubblewrap >= 0.4 serves.
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends bubblewrap && rm -rf /var/lib/apt/lists/*

COPY setup.py README.md ./
COPY scripts ./scripts
COPY megatron_pacore ./megatron_pacore
RUN EXTRAS=gpu,test bash scripts/install.sh && rm -rf /root/.cache/pip
COPY . .
ENV PATH=/workspace/megatron_pacore/.venv/bin:$PATH
CMD ["pacore", "--help"]
