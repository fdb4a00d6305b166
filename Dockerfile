# edgeres images. The default (last) stage is the CPU image: TVM + ONNX Runtime + PyTorch CPU,
# installed with the README's command.
#   docker build -t edgeres .                 && docker run --rm edgeres edgeres quickstart
#   docker build --target tensorrt -t edgeres:trt .   (NVIDIA host; TensorRT from NVIDIA's image)

# --- TensorRT stage: NVIDIA's image ships TensorRT's Python package and CUDA ---
FROM nvcr.io/nvidia/tensorrt:25.01-py3 AS tensorrt
WORKDIR /opt/edgeres
COPY . .
RUN pip install --no-cache-dir torch==2.13.0 -e ".[tensorrt,dev]"
CMD ["edgeres", "--help"]

# --- CPU stage (default) ---
FROM python:3.11-slim-bookworm AS cpu
RUN apt-get update && apt-get install -y --no-install-recommends g++ make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/edgeres
COPY . .
# README command 1, without the quickstart run (torch pinned: an unpinned torch pulls a CUDA build).
RUN python3 -m venv .venv && .venv/bin/pip install --no-cache-dir torch==2.13.0 -e ".[tvm,trtcheck,dev]"
# ARM boards: aarch64 cross toolchain, qemu and the aarch64 TVM runtime (README "ARM boards").
RUN tools/setup-aarch64.sh
ENV PATH=/opt/edgeres/.venv/bin:$PATH
CMD ["edgeres", "--help"]
