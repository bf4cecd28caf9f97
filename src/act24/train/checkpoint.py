"""Atomic checkpoints that refuse to resume into a different model."""

from __future__ import annotations

import os
import pathlib

import torch

NAME = "checkpoint.pt"


def save(path: pathlib.Path, state: dict) -> None:
    """Write to a temporary file, then rename: a crash mid-write never leaves a torn checkpoint."""
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load(path: pathlib.Path, model_config: dict) -> dict:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("model_config") != model_config:
        theirs, ours = state.get("model_config") or {}, model_config
        diff = {k: (theirs.get(k), ours.get(k)) for k in sorted(set(theirs) | set(ours)) if theirs.get(k) != ours.get(k)}
        raise ValueError(
            f"{path} was written for another model: (checkpoint, this run) differ in {diff}; "
            "run with the checkpoint's settings or choose another --out"
        )
    return state
