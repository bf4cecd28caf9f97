"""Atomic checkpoints that refuse to resume into a different model."""

from __future__ import annotations

import json
import os
import pathlib
import shutil

import torch

from ..reference.checks import first_line

NAME = "checkpoint.pt"
SHARDED_NAME = "checkpoint.dcp"  # a folder written by torch.distributed.checkpoint


def save(path: pathlib.Path, state: dict) -> None:
    """Write to a temporary file, then rename: a crash mid-write never leaves a torn checkpoint."""
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _read(path: pathlib.Path, **options) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, **options)
    except Exception as e:  # torch raises several types for a torn or foreign file
        raise ValueError(f"{path} is not a readable act24 checkpoint ({type(e).__name__}: "
                         f"{first_line(e)[:200]}); a truncated file or another kind of file reads so: "
                         "choose another --out") from e
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(f"{path} is not an act24 checkpoint (no model state in it); choose another --out")
    return state


def load(path: pathlib.Path, model_config: dict) -> dict:
    state = _read(path)
    check_model_config(path, state.get("model_config"), model_config)
    return state


TENSORS = ("model", "optimizer", "data_rng")  # the single-file checkpoint's keys that are not metadata


def read_meta(out_dir: pathlib.Path) -> dict | None:
    """The metadata (step, model and training settings, data) of the checkpoint in `out_dir`, without
    reading its tensors (memory-mapped), or None when there is none."""
    single = pathlib.Path(out_dir) / NAME
    if single.exists():
        state = _read(single, mmap=True)
        return {k: v for k, v in state.items() if k not in TENSORS}
    sharded = find_sharded(pathlib.Path(out_dir) / SHARDED_NAME)
    return json.loads((sharded / "meta.json").read_text()) if sharded else None


def check_model_config(path: pathlib.Path, saved: dict | None, model_config: dict) -> None:
    if saved != model_config:
        theirs, ours = saved or {}, model_config
        diff = {k: (theirs.get(k), ours.get(k)) for k in sorted(set(theirs) | set(ours)) if theirs.get(k) != ours.get(k)}
        raise ValueError(
            f"{path} was written for another model: (checkpoint, this run) differ in {diff}; "
            "run with the checkpoint's settings or choose another --out"
        )


def _sibling(path: pathlib.Path, suffix: str) -> pathlib.Path:
    """The folder beside `path` that a sharded save writes first (.tmp) or moves the last one to (.old)."""
    return path.with_name(path.name + suffix)


def save_sharded(path: pathlib.Path, model, optimizer, tensors: dict, meta: dict, is_main: bool, barrier) -> None:
    """Every rank writes its shards (torch.distributed.checkpoint) into a temporary folder; rank 0
    adds meta.json and renames it into place, so an interrupted save leaves the last one intact."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    tmp, old = _sibling(path, ".tmp"), _sibling(path, ".old")
    if is_main:
        shutil.rmtree(tmp, ignore_errors=True)
    barrier()
    model_state, optim_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optim_state, **tensors}, checkpoint_id=str(tmp))
    barrier()
    if is_main:
        (tmp / "meta.json").write_text(json.dumps(meta))
        shutil.rmtree(old, ignore_errors=True)  # left by a crash between the two renames below
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)  # a crash before this leaves `old`, which `find_sharded` falls back to
        shutil.rmtree(old, ignore_errors=True)
    barrier()


def find_sharded(path: pathlib.Path) -> pathlib.Path | None:
    """The complete sharded checkpoint at `path`, or the previous one if a save died mid-rename."""
    for candidate in (path, _sibling(path, ".old")):
        if (candidate / "meta.json").exists():
            return candidate
    return None


def read_sharded_meta(path: pathlib.Path, model_config: dict) -> dict:
    meta = json.loads((path / "meta.json").read_text())
    check_model_config(path, meta.get("model_config"), model_config)
    return meta


def load_sharded(path: pathlib.Path, model, optimizer, tensors: dict) -> None:
    """Load shards into the (already sharded) model and optimizer, and into `tensors` in place."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optim_state, **tensors}
    dcp.load(state, checkpoint_id=str(path))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
