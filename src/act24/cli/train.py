"""`act24 train`: train a small decoder LM; with no arguments, on the Python standard library."""

from __future__ import annotations

import json
import sys


def run(args) -> int:
    import torch

    from ..train import distributed

    try:
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError as e:
        print(f"act24 train: --device {args.device}: {e}", file=sys.stderr)
        return 2
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"act24 train: --device {args.device}: this machine has no CUDA GPU that torch can use", file=sys.stderr)
        return 2
    dist = distributed.init(device.type) if distributed.launched_by_torchrun() else None
    if dist is not None:
        device = dist.device
    try:
        return _train(args, device, dist)
    finally:
        if dist is not None:
            distributed.shutdown()


RUNTIME = ("compile", "activation_checkpointing", "cuda_graphs")  # this process's choice, never the checkpoint's


def _settings(args, on_gpu: bool, saved: dict | None):
    """(model config, training config, data) from the flags; with --resume, what a flag does not
    give comes from the checkpoint, so `act24 train --resume` continues the same run."""
    import dataclasses

    from ..model import ModelConfig, preset
    from ..train import TrainConfig

    saved = saved or {}
    if saved.get("model_config"):  # resuming: the checkpoint's model, changed only where a flag says so
        base = ModelConfig(**saved["model_config"])
        sized = preset(args.preset) if args.preset else base
        model_cfg = dataclasses.replace(sized, ffn=base.ffn if args.ffn is None else args.ffn,
                                        seq_len=base.seq_len if args.seq_len is None else args.seq_len)
    else:
        model_cfg = preset(args.preset or ("25m" if on_gpu else "tiny"), ffn=args.ffn, seq_len=args.seq_len)
    settings = {"steps": 2000 if on_gpu else 300, "batch_size": 32 if on_gpu else 16}
    if saved.get("train_config"):
        run = dataclasses.asdict(TrainConfig.from_saved(saved["train_config"]))
        settings.update({k: v for k, v in run.items() if k not in RUNTIME})
    given = {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
             "dense_warmup_steps": args.dense_warmup_steps, "eval_interval": args.eval_interval,
             "log_interval": args.log_interval}
    settings.update({k: v for k, v in given.items() if v is not None})
    train_cfg = TrainConfig(**settings, **{k: getattr(args, k) for k in RUNTIME})
    if saved and args.data is None and "data_spec" not in saved:
        print("act24 train: this checkpoint does not record its data; resuming on the default data "
              "(pass --data to choose)", file=sys.stderr)
    return model_cfg, train_cfg, args.data if args.data is not None else saved.get("data_spec")


def _train(args, device, dist) -> int:
    import pathlib

    from ..train import Trainer, load_corpus
    from ..train.checkpoint import read_meta

    on_gpu = device.type == "cuda"
    main = dist is None or dist.is_main
    try:
        saved = read_meta(pathlib.Path(args.out)) if args.resume else None
        model_cfg, train_cfg, data = _settings(args, on_gpu, saved)
        corpus = load_corpus(data)
        if main:
            print(f"data: {corpus.source}: {corpus.files} file{'s' if corpus.files != 1 else ''}, "
                  f"{corpus.train.numel():,} train / "
                  f"{corpus.val.numel():,} validation bytes")
        trainer = Trainer(model_cfg, train_cfg, corpus, args.out, device, resume=args.resume, progress=not args.quiet,
                          dist=dist)
    except (FileExistsError, FileNotFoundError, ValueError) as e:
        print(f"act24 train: {e}", file=sys.stderr)
        return 2
    sparse_note = f"; 2:4 after step {train_cfg.resolved_dense_warmup}" if model_cfg.ffn == "relu2-sparse" else ""
    if main and model_cfg.ffn != "relu2-sparse" and args.dense_warmup_steps is not None:
        print(f"act24 train: --dense-warmup-steps has no effect with --ffn {model_cfg.ffn}", file=sys.stderr)
    if main and model_cfg.ffn == "relu2-sparse" and train_cfg.resolved_dense_warmup >= train_cfg.steps:
        print(f"act24 train: the run ends at step {train_cfg.steps}, before the switch to 2:4 after step "
              f"{train_cfg.resolved_dense_warmup}: its FFNs stay dense throughout", file=sys.stderr)
    where = f"{dist.world_size} ranks, FSDP2" if dist is not None else f"device {device}"
    if main:
        print(f"model: {model_cfg.ffn} FFN, {trainer.model.num_params() / 1e6:.1f}M parameters, "
              f"{model_cfg.n_layers} layers, d={model_cfg.d_model}, hidden={model_cfg.hidden}; {where}{sparse_note}")
    if trainer.step >= train_cfg.steps:
        if args.steps is not None and args.steps < trainer.step:  # a step count the run has already passed
            if main:
                print(f"act24 train: --steps {args.steps} is not past the checkpoint's step {trainer.step}: pass "
                      f"a larger --steps to extend the run in {args.out}", file=sys.stderr)
            return 2
        if main:
            print(f"the run in {args.out} already finished at step {trainer.step}; pass --steps N to extend it")
        return 0
    try:
        summary = trainer.run()
    except KeyboardInterrupt:
        return 130
    if main:
        print(json.dumps({k: summary[k] for k in ("step", "loss", "val_loss", "act_sparsity", "dropped_fraction")
                          if k in summary}))
        print(f"metrics, plots and checkpoint in {args.out}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a decoder LM (default: the Python standard library as data)")
    p.add_argument("--preset", choices=["tiny", "25m", "125m", "1b"], help="model size (default: tiny on CPU, 25m on GPU)")
    p.add_argument("--ffn", choices=["relu2-sparse", "relu2", "swiglu"], help="FFN kind (default: relu2-sparse)")
    p.add_argument("--data", help="a text/jsonl file or folder, or hf:NAME[:CONFIG] for a Hugging Face dataset "
                                  "(default: the Python standard library source)")
    p.add_argument("--steps", type=int, help="optimizer steps (default: 300 on CPU, 2000 on GPU); with --resume, "
                                             "a larger count extends the run (the LR schedule follows the new total)")
    p.add_argument("--batch-size", type=int, help="sequences per step (default: 16 on CPU, 32 on GPU)")
    p.add_argument("--seq-len", type=int, help="tokens per sequence (default: the preset's)")
    p.add_argument("--lr", type=float, help="peak learning rate (default: 3e-3)")
    p.add_argument("--dense-warmup-steps", type=int, help="dense FFN steps before 2:4 (default: min(1000, steps/4))")
    p.add_argument("--eval-interval", type=int, help="steps between validations (default: 100)")
    p.add_argument("--log-interval", type=int, help="steps between logged losses (default: 10)")
    p.add_argument("--seed", type=int, help="initialisation and data order (default: 0)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    p.add_argument("--out", default="runs/act24",
                   help="run folder: metrics.jsonl, loss.png, checkpoint.pt (default: runs/act24, under the current folder)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its checkpoint, with its settings and data unless given")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--compile", action="store_true", help="torch.compile each block (fullgraph)")
    p.add_argument("--activation-checkpointing", action="store_true", help="recompute blocks in the backward")
    p.add_argument("--cuda-graphs", action="store_true",
                   help="replay each training step from a CUDA graph, captured again when the FFNs turn 2:4 "
                        "(one GPU; removes the per-step host cost that makes small sparse models slow)")
    p.epilog = "Under torchrun --nproc_per_node N, trains data-parallel with FSDP2 (--batch-size is global)."
    p.set_defaults(run=run)
