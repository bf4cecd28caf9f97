"""`act24 info`: versions, the GPU, and which backend act24 would use."""

from __future__ import annotations

import json
import platform

import torch

from ..ffn.backend import (FUSED_DY2_MAX_D, FUSED_GEMM1_MAX_D, NO_WORK_LIMIT, backend_for, cusparselt_version,
                           fused_dy2_reason, fused_gemm1_max_work, fused_gemm1_reason, triton_version)


def environment() -> dict:
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "gpu": None,
        "compute_capability": None,
        "cusparselt": cusparselt_version(),
        "triton": triton_version(),
    }
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["compute_capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
    backend = backend_for(device)
    env["device"] = str(device)
    env["backend"] = backend.name
    env["backend_reason"] = backend.reason
    env["cusparselt_calls"] = _cusparselt_calls() if backend.name == "cusparselt" else None
    env["fused_gemm1"] = (fused_gemm1_reason(device, torch.bfloat16) or f"on (checked in bf16 without counting; "
                          f"d <= {FUSED_GEMM1_MAX_D}{_work_limit(device)})") if device.type == "cuda" else None
    env["fused_dy2"] = (fused_dy2_reason(device, torch.bfloat16) or f"on in training (checked in bf16; d <= {FUSED_DY2_MAX_D})") if device.type == "cuda" else None
    return env


def _cusparselt_calls() -> str:
    from ..gemm import cusparselt

    if cusparselt.planned_calls_ok(torch.bfloat16, torch.device("cuda", torch.cuda.current_device())):
        return "planned: one cuSPARSELt plan per problem, checked against torch"
    return "through torch._cslt_sparse_mm: a plan built at every call (the warning says why)"


def run(args) -> int:
    env = environment()
    if args.json:
        print(json.dumps(env, indent=2))
        return 0
    width = max(map(len, env))
    for key, value in env.items():
        print(f"{key:<{width}}  {'-' if value is None else value}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="versions, GPU and the backend act24 would use")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(run=run)


def _work_limit(device) -> str:
    limit = fused_gemm1_max_work(device)
    if limit == NO_WORK_LIMIT:
        return ""
    exponent = limit.bit_length() - 1
    return f", tokens*d*hidden <= {f'2^{exponent}' if limit == 1 << exponent else limit} on this GPU model"
