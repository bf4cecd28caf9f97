"""The training loop: AdamW, warm-up + cosine, clipping, bf16 autocast on GPU, dense FFN
warm-up then 2:4, validation, metrics, plots, atomic checkpoints and exact resume."""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import sys
import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ..ffn import DenseWarmup
from ..ffn.dispatch import sparse_threshold_override
from ..model import DecoderLM, ModelConfig
from . import checkpoint, distributed, plots
from .data import BatchSampler, Corpus
from .graphed_step import GraphedStep, train_step_body
from .interrupt import DeferredInterrupt
from .schedule import learning_rate


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 300
    batch_size: int = 16
    lr: float = 3e-3
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    lr_warmup_steps: int | None = None  # default: 10% of steps, at most 200
    dense_warmup_steps: int | None = None  # default: the paper's 1000, or a quarter of shorter runs
    eval_interval: int = 100
    eval_batches: int = 8
    log_interval: int = 10
    checkpoint_interval: int = 500
    seed: int = 0
    compile: bool = False  # torch.compile each block (fullgraph)
    activation_checkpointing: bool = False  # recompute blocks in the backward
    cuda_graphs: bool = False  # replay each step from a CUDA graph (one GPU; small models gain most)

    def __post_init__(self):
        for name in ("steps", "batch_size", "eval_interval", "eval_batches", "log_interval", "checkpoint_interval"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} (--{name.replace('_', '-')}) must be positive, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr (--lr) must be positive, got {self.lr}")
        for name in ("dense_warmup_steps", "lr_warmup_steps"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise ValueError(f"{name} (--{name.replace('_', '-')}) must be >= 0, got {getattr(self, name)}")

    @property
    def resolved_dense_warmup(self) -> int:
        return self.dense_warmup_steps if self.dense_warmup_steps is not None else min(1000, self.steps // 4)

    @property
    def resolved_lr_warmup(self) -> int:
        return self.lr_warmup_steps if self.lr_warmup_steps is not None else max(1, min(200, self.steps // 10))

    def trajectory(self) -> dict:
        """The settings a resumed run must share with the run it continues. The rest may change:
        intervals, compilation, graphs, and `steps` (to extend a run; the schedule follows the new total)."""
        return {"batch_size": self.batch_size, "lr": self.lr, "weight_decay": self.weight_decay,
                "grad_clip": self.grad_clip, "lr_warmup_steps": self.resolved_lr_warmup,
                "dense_warmup_steps": self.resolved_dense_warmup, "seed": self.seed}

    @classmethod
    def from_saved(cls, saved: dict) -> "TrainConfig":
        """The config a checkpoint recorded, its warm-ups resolved with its own steps (older
        checkpoints record them as None); fields this version does not know are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in saved.items() if k in known}).resolved()

    def resolved(self) -> "TrainConfig":
        """This config with its warm-ups as numbers: what a checkpoint records, so that a run extended
        with more steps keeps the warm-ups it trained with (their defaults depend on `steps`)."""
        return dataclasses.replace(self, lr_warmup_steps=self.resolved_lr_warmup,
                                   dense_warmup_steps=self.resolved_dense_warmup)


def check_same_run(path: pathlib.Path, meta: dict, cfg: TrainConfig, data_source: str) -> None:
    """Refuse to resume a checkpoint with other training settings or other data: the run would
    silently take another trajectory (another schedule, dense warm-up, token grouping or batches)."""
    diff = {}
    if meta.get("train_config") is not None:
        saved = TrainConfig.from_saved(meta["train_config"]).trajectory()
        diff = {k: (saved[k], v) for k, v in cfg.trajectory().items() if saved[k] != v}
    if meta.get("data") is not None and meta["data"] != data_source:
        diff["data"] = (meta["data"], data_source)
    if diff:
        raise ValueError(f"{path} was written by a run with other settings: (checkpoint, this run) differ in {diff}; "
                         "resume with the checkpoint's settings, or choose another --out")


class Trainer:
    """Trains a DecoderLM on one device, or data-parallel with FSDP2 when given a DistContext."""

    def __init__(self, model_cfg: ModelConfig, cfg: TrainConfig, corpus: Corpus, out_dir: pathlib.Path,
                 device: torch.device, resume: bool = False, progress: bool = True,
                 dist: distributed.DistContext | None = None):
        self.model_cfg, self.cfg, self.out_dir, self.device = model_cfg, cfg, pathlib.Path(out_dir), device
        self.dist = dist
        self.is_main = dist is None or dist.is_main
        self.progress = progress and self.is_main
        if cfg.cuda_graphs and (device.type != "cuda" or dist is not None or cfg.compile
                                or cfg.activation_checkpointing):
            raise ValueError("--cuda-graphs needs one CUDA device, without torchrun, --compile or "
                             f"--activation-checkpointing (device {device}, {'torchrun' if dist else 'one process'}, "
                             f"compile={cfg.compile}, activation_checkpointing={cfg.activation_checkpointing})")
        if dist is not None and cfg.batch_size % dist.world_size:
            raise ValueError(f"batch size {cfg.batch_size} (global) must be a multiple of the {dist.world_size} ranks")
        ckpt_path = self.out_dir / (checkpoint.NAME if dist is None else checkpoint.SHARDED_NAME)
        if dist is not None:
            ckpt_path = checkpoint.find_sharded(ckpt_path) or ckpt_path
        if ckpt_path.exists() and not resume:
            raise FileExistsError(f"{ckpt_path} exists: pass --resume to continue that run, or choose another --out")
        if not resume and (self.out_dir / "metrics.jsonl").exists():
            # a run that stopped before its first checkpoint: appending would mix the two runs' metrics
            raise FileExistsError(f"{self.out_dir / 'metrics.jsonl'} exists from an earlier run without a checkpoint "
                                  "to resume: choose another --out, or delete it")
        if resume and not ckpt_path.exists():
            raise FileNotFoundError(f"--resume: no checkpoint at {ckpt_path}")
        model_dict = dataclasses.asdict(model_cfg)
        if dist is None:
            state = checkpoint.load(ckpt_path, model_dict) if resume else None
        else:
            state = checkpoint.read_sharded_meta(ckpt_path, model_dict) if resume else None
        if state is not None:
            check_same_run(ckpt_path, state, cfg, corpus.source)

        torch.manual_seed(cfg.seed)
        self.model = DecoderLM(model_cfg).to(device)
        self.model.activation_checkpointing = cfg.activation_checkpointing
        if cfg.compile:
            for block in self.model.blocks:
                block.compile(fullgraph=True)
        if dist is not None:
            distributed.shard(self.model, device)
        decay = [p for p in self.model.parameters() if p.ndim >= 2]
        no_decay = [p for p in self.model.parameters() if p.ndim < 2]
        fused = device.type == "cuda" and dist is None
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.lr, betas=(0.9, 0.95), fused=fused,
        )
        self.train_batches = BatchSampler(corpus.train, model_cfg.seq_len, cfg.batch_size, cfg.seed, "train")
        BatchSampler(corpus.val, model_cfg.seq_len, cfg.batch_size, cfg.seed, "validation")  # fails early if too short
        if self.is_main:  # after every check of the settings and the data: a refused run leaves no folder
            self.out_dir.mkdir(parents=True, exist_ok=True)
        self.corpus = corpus
        self.step = 0
        self.tokens_seen = 0
        self._rng_at_step_start: torch.Tensor | None = None
        if state is not None:
            if dist is None:
                self.model.load_state_dict(state["model"])
                self.optimizer.load_state_dict(state["optimizer"])
                self.train_batches.generator.set_state(state["data_rng"])
            else:
                rng = {"data_rng": self.train_batches.generator.get_state()}
                checkpoint.load_sharded(ckpt_path, self.model, self.optimizer, rng)
                self.train_batches.generator.set_state(rng["data_rng"])
            self.step, self.tokens_seen = state["step"], state["tokens_seen"]
            if self.is_main:
                self._truncate_metrics(self.step)
        self._set_optimizer_mode(fused, cfg.cuda_graphs, device)
        self.autocast = dict(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
        self.graphed = None
        if cfg.cuda_graphs:
            self.graphed = GraphedStep(self.model, self.optimizer, cfg.grad_clip, self.autocast)
        self.warmup = DenseWarmup(self.model, cfg.resolved_dense_warmup) if model_cfg.ffn == "relu2-sparse" else None

    # -- pieces -------------------------------------------------------------------------
    def _set_optimizer_mode(self, fused: bool, capturable: bool, device: torch.device) -> None:
        """This run's AdamW settings: a checkpoint's param groups carry those of the run that saved it
        (another device, with or without CUDA graphs)."""
        for group in self.optimizer.param_groups:
            group["fused"], group["capturable"] = fused, capturable
            lr = float(group["lr"])
            # a graph reads the learning rate from device memory; the eager loop sets a number
            group["lr"] = torch.tensor(lr, dtype=torch.float32, device=device) if capturable else lr
            for p in group["params"]:
                step = self.optimizer.state.get(p, {}).get("step")
                if step is not None and (fused or capturable):  # these implementations count steps on the device
                    self.optimizer.state[p]["step"] = step.to(device=p.device, dtype=torch.float32)

    def _truncate_metrics(self, step: int) -> None:
        """A resumed run rewrites what came after its checkpoint."""
        path = self.out_dir / "metrics.jsonl"
        keep = [r for r in plots.read_metrics(path) if r["step"] <= step]
        path.write_text("".join(json.dumps(r) + "\n" for r in keep))

    def _log(self, record: dict) -> None:
        if not self.is_main:
            return
        with open(self.out_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def save_checkpoint(self) -> pathlib.Path:
        meta = {"step": self.step, "tokens_seen": self.tokens_seen,
                "model_config": dataclasses.asdict(self.model_cfg), "train_config": dataclasses.asdict(self.cfg.resolved()),
                "data": self.corpus.source, "data_spec": self.corpus.spec}
        rng = {"data_rng": self.train_batches.generator.get_state()}
        if self.dist is not None:
            path = self.out_dir / checkpoint.SHARDED_NAME
            checkpoint.save_sharded(path, self.model, self.optimizer, rng, {**meta, "world_size": self.dist.world_size},
                                    self.is_main, distributed.barrier)
        else:
            path = self.out_dir / checkpoint.NAME
            checkpoint.save(path, {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                                   **rng, **meta})
        return path

    @torch.no_grad()
    def evaluate(self) -> float:
        self.model.eval()
        for f in self.model.ffn_modules():  # no statistics here: a graph's logged ones must stay in place
            f.track_stats = False
        batches = BatchSampler(self.corpus.val, self.model_cfg.seq_len, self.cfg.batch_size, 1234, "validation")
        losses = []
        # evaluate the FFN as it trains: 2:4 at every size once sparse (inference dispatch would
        # pick the dense path for small batches)
        with sparse_threshold_override(0):
            for _ in range(self.cfg.eval_batches):
                x, y = self._local(*batches.sample(self.device))
                with torch.autocast(**self.autocast):
                    losses.append(self.model(x, y)[1].item())
        self.model.train()
        return self._mean(sum(losses) / len(losses))

    def _local(self, x, y):
        """This rank's slice of the global batch (every rank draws the same one)."""
        if self.dist is None:
            return x, y
        return distributed.local_slice(x, self.dist), distributed.local_slice(y, self.dist)

    def _mean(self, value: float) -> float:
        return value if self.dist is None else distributed.mean_over_ranks(value, self.device)

    def _train_step(self, track_stats: bool) -> tuple[float, list, float, bool]:
        sparse_now = self.warmup.update(self.step) if self.warmup is not None else False
        ffns = self.model.ffn_modules()
        for f in ffns:
            f.track_stats = track_stats
        lr = learning_rate(self.step, peak=self.cfg.lr, warmup=self.cfg.resolved_lr_warmup, total=self.cfg.steps)
        for group in self.optimizer.param_groups:
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr
        self._rng_at_step_start = self.train_batches.generator.get_state()
        x, y = self._local(*self.train_batches.sample(self.device))
        if self.graphed is not None:
            loss = self.graphed.step(x, y, sparse_now, track_stats)
        else:
            loss = train_step_body(self.model, self.optimizer, self.cfg.grad_clip, self.autocast, x, y)
            self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self._rng_at_step_start = None  # the step is complete
        self.tokens_seen += x.numel() * (1 if self.dist is None else self.dist.world_size)
        stats = [f.last_stats for f in ffns] if track_stats else []  # this rank's tokens
        return self._mean(loss.item()) if track_stats else float("nan"), stats, lr, sparse_now

    def _check_parameters(self) -> None:
        """Every parameter finite (on every rank), or FloatingPointError. A loss can still be finite
        when the update after it was not."""
        local = [p.to_local() if hasattr(p, "to_local") else p for p in self.model.parameters()]
        if self._mean(float(torch.stack([t.isfinite().all() for t in local]).all())) != 1.0:  # every rank votes
            raise FloatingPointError(f"parameters are not finite after step {self.step}; lower --lr (the last "
                                     "checkpoint was left as it was)")

    def _check_finite(self, what: str, value: float) -> None:
        if not math.isfinite(value):
            raise FloatingPointError(f"{what} is {value} at step {self.step}; lower --lr (the last checkpoint "
                                     "was left as it was)")

    # -- the loop -----------------------------------------------------------------------
    def run(self) -> dict:
        """Train to cfg.steps. Ctrl-C stops at the next step boundary with a checkpoint (a second Ctrl-C
        stops at once, rewinding an unfinished step). Under torchrun the ranks agree at every step
        boundary whether any of them was interrupted, so all of them stop and save at the same step."""
        with DeferredInterrupt() as stop:  # see interrupt.py
            return self._run(stop)

    def _stop_requested(self, stop: DeferredInterrupt) -> bool:
        return stop.requested if self.dist is None else distributed.any_rank(stop.requested)

    def _run(self, stop: DeferredInterrupt) -> dict:
        cfg = self.cfg
        # redrawn every 30 s into a log file (not a terminal) rather than every step
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not self.progress, unit="step", dynamic_ncols=True,
                   mininterval=0.1 if sys.stderr.isatty() else 30)
        last_time, last_tokens = time.perf_counter(), self.tokens_seen
        summary = {}
        try:
            while self.step < cfg.steps:
                log_now = (self.step + 1) % cfg.log_interval == 0 or self.step + 1 == cfg.steps
                loss, stats, lr, sparse_now = self._train_step(track_stats=log_now)
                if log_now:
                    self._check_finite("loss", loss)
                    now = time.perf_counter()
                    tok_s = (self.tokens_seen - last_tokens) / (now - last_time)
                    last_time, last_tokens = now, self.tokens_seen
                    record = {"step": self.step, "loss": loss, "lr": lr, "tokens": self.tokens_seen,
                              "tokens_per_s": tok_s, "sparse": sparse_now}
                    if stats:
                        record["layer_sparsity"] = [s.activation_sparsity for s in stats]
                        record["layer_dropped"] = [s.dropped_fraction for s in stats]
                        record["act_sparsity"] = sum(record["layer_sparsity"]) / len(stats)
                        record["dropped_fraction"] = sum(record["layer_dropped"]) / len(stats)
                    self._log(record)
                    summary.update(record)
                    postfix = {"loss": f"{loss:.3f}", "tok/s": f"{tok_s:,.0f}"}
                    if stats:
                        postfix["sparsity"] = f"{record['act_sparsity']:.2f}" + (" 2:4" if sparse_now else "")
                    bar.set_postfix(postfix, refresh=False)
                if self.step % cfg.eval_interval == 0 or self.step == cfg.steps:
                    val = self.evaluate()
                    self._check_finite("validation loss", val)
                    self._log({"step": self.step, "val_loss": val})
                    summary["val_loss"] = val
                    if self.is_main:
                        bar.write(f"step {self.step}: validation loss {val:.4f}")
                if self.step % cfg.checkpoint_interval == 0 or self.step == cfg.steps:
                    self._check_parameters()  # never replace the last checkpoint with a diverged model
                    self.save_checkpoint()
                bar.update(1)
                if self._stop_requested(stop):
                    raise KeyboardInterrupt  # at a step boundary (on every rank): nothing to rewind
        except KeyboardInterrupt:
            if self._rng_at_step_start is not None:  # interrupted inside a step: it will be redone
                self.train_batches.generator.set_state(self._rng_at_step_start)
            try:
                self._check_parameters()
            except FloatingPointError as e:
                if self.is_main:
                    bar.write(f"interrupted at step {self.step}, not saved: {e}")
                raise KeyboardInterrupt from e
            path = self.save_checkpoint()
            if self.is_main:
                bar.write(f"interrupted at step {self.step}: saved {path}; continue with "
                          f"--resume --out {self.out_dir}")
            raise
        finally:
            bar.close()
            if self.is_main:
                plots.plot_run(self.out_dir, self.warmup.dense_steps if self.warmup is not None else None)
        return summary
