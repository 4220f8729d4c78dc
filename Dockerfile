# GPU image: NGC PyTorch (CUDA torch, NVIDIA apex, cuDNN) + CUDA vLLM + Transformer Engine.
# apex comes with the base image; it is never a pip requirement (PyPI's "apex" is unrelated).
#   docker build -t megatron-pacore .
#   docker run --gpus all --ipc=host -v $PWD:/workspace/megatron_pacore megatron-pacore \
#       pacore infer --model /ckpt --input problems.jsonl --output out.jsonl --level high
FROM nvcr.io/nvidia/pytorch:25.09-py3

# bubblewrap: the code grader's sandbox (namespaces need a container allowed to make them,
# e.g. --security-opt seccomp=unconfined, or the grader falls back and says so).
RUN apt-get update && apt-get install -y --no-install-recommends bubblewrap && rm -rf /var/lib/apt/lists/*

WORKDIR /workspace/megatron_pacore
COPY setup.py README.md ./
COPY megatron_pacore ./megatron_pacore
RUN pip install --no-cache-dir -e ".[gpu,test]"
COPY . .
ENV PYTHONUNBUFFERED=1
CMD ["pacore", "--help"]
