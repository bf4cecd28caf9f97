"""PNG plots of a run's metrics.jsonl: loss curves and per-layer activation sparsity."""

from __future__ import annotations

import json
import pathlib


def read_metrics(path: pathlib.Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_run(out_dir: pathlib.Path, sparse_from: int | None = None) -> list[pathlib.Path]:
    """loss.png and sparsity.png from out_dir/metrics.jsonl. `sparse_from`: the dense steps before 2:4
    (marked on both where the run got there; by default the first logged 2:4 step)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    rows = read_metrics(out_dir / "metrics.jsonl")
    train = [r for r in rows if "loss" in r]
    val = [r for r in rows if "val_loss" in r]
    written = []
    logged = next((r["step"] for r in train if r.get("sparse")), None)  # logged every few steps only
    switch = sparse_from if sparse_from is not None and logged is not None else logged
    if train:
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot([r["step"] for r in train], [r["loss"] for r in train], label="train", lw=1)
        if val:
            ax.plot([r["step"] for r in val], [r["val_loss"] for r in val], "o-", label="validation")
        if switch is not None:
            ax.axvline(switch, color="gray", ls="--", lw=1, label="2:4 sparse from here")
        ax.set(xlabel="step", ylabel="loss (nats/byte)", title="loss")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out_dir / "loss.png", dpi=120)
        plt.close(fig)
        written.append(out_dir / "loss.png")
    layered = [r for r in train if r.get("layer_sparsity")]
    if layered:
        fig, ax = plt.subplots(figsize=(7, 4))
        for i in range(len(layered[0]["layer_sparsity"])):
            ax.plot([r["step"] for r in layered], [r["layer_sparsity"][i] for r in layered], label=f"layer {i}", lw=1)
        if switch is not None:
            ax.axvline(switch, color="gray", ls="--", lw=1, label="2:4 from here")
        ax.set(xlabel="step", ylabel="zeros in relu(x W1^T)^2", title="activation sparsity per layer", ylim=(0, 1))
        ax.legend(fontsize="small", ncol=2)
        fig.tight_layout()
        fig.savefig(out_dir / "sparsity.png", dpi=120)
        plt.close(fig)
        written.append(out_dir / "sparsity.png")
    return written
