"""`act24 bench ffn`: dense vs sparse FFN timings on the GPU, written to results/."""

from __future__ import annotations

import sys


def run(args) -> int:
    import torch

    if args.what == "prefill":
        return run_prefill(args)
    from ..bench import common, ffn_forward, ffn_train

    tokens = tuple(args.tokens) if args.tokens else ffn_forward.TOKENS
    shapes = tuple(tuple(s) for s in args.shape) if args.shape else ffn_forward.SHAPES
    bad = [t for t in tokens if t <= 0 or t % 64] + [h for _, h in shapes if h <= 0 or h % 64]
    if bad:
        print(f"act24 bench ffn: --tokens and the hidden size of --shape must be positive multiples of 64 "
              f"(the packers' row and column blocks), got {bad}", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("act24 bench needs a CUDA GPU (this machine has none)", file=sys.stderr)
        return 2
    bench, topic = (ffn_train.train_rows, "ffn_train") if args.backward else (ffn_forward.forward_rows, "ffn_forward")
    if _refuses_to_overwrite(args.out, topic, "ffn"):
        return 2
    rounds = args.rounds or common.ROUNDS
    header = {**common.header(), "rounds": rounds}
    progress = _progress_writer(args.out, topic, header, lambda row: (
        f"T={row['T']} d={row['d']} H={row['H']}: {row['speedup_vs_compiled']:.3f}x vs compiled"))
    rows = bench(tokens, shapes, progress=progress, rounds=rounds)
    path = common.write_result(args.out, topic, {**header, "rows": rows})
    common.print_table(rows, ffn_train.COLUMNS if args.backward else ffn_forward.COLUMNS)
    print(f"wrote {path}")
    return 0


def run_prefill(args) -> int:
    import torch

    from ..bench import common, prefill

    if args.config and args.model:
        print("act24 bench prefill: --config and --model are two choices of model; give one", file=sys.stderr)
        return 2
    if args.trust_remote_code and not args.model:
        print("act24 bench prefill: --trust-remote-code applies to --model only", file=sys.stderr)
        return 2
    device = "cuda" if torch.cuda.is_available() else "cpu"
    config = args.config or ("1b" if device == "cuda" else "tiny")
    if _refuses_to_overwrite(args.out, "prefill", "prefill"):
        return 2
    header = common.header()
    progress = _progress_writer(args.out, "prefill", header, lambda row: (
        f"T={row['T']}: prefill {row['speedup']:.3f}x, decode {row['decode_sparse_tok_s']:.1f} vs "
        f"{row['decode_dense_tok_s']:.1f} tok/s"))
    try:
        rows, meta = prefill.prefill_rows(config, args.tokens, device, progress=progress, rounds=args.rounds,
                                          model_path=args.model, trust_remote_code=args.trust_remote_code)
    except RuntimeError as e:
        print(f"act24 bench prefill: {e}", file=sys.stderr)
        return 2
    path = common.write_result(args.out, "prefill", {**header, **meta, "rows": rows})
    common.print_table(rows, prefill.COLUMNS)
    print(f"agreement on a {meta['agreement']['prompt_tokens']}-token prompt: {meta['agreement']}")
    print(f"wrote {path}")
    return 0


def _refuses_to_overwrite(out: str, topic: str, what: str) -> bool:
    """True (and says why) when out/topic.json holds another machine's results."""
    from ..bench import common

    problem = common.overwrite_problem(out, topic)
    if problem is not None:
        print(f"act24 bench {what}: {problem}", file=sys.stderr)
    return problem is not None


def _progress_writer(out: str, topic: str, header: dict, describe):
    """A progress callback that writes the rows so far after every row (a run cut short keeps what it
    measured) and prints describe(row)."""
    from ..bench import common

    done = []

    def progress(row):
        done.append(row)
        common.write_result(out, topic, {**header, "rows": done, "complete": False})
        print(describe(row), flush=True)
    return progress


def _positive_int(text: str) -> int:
    import argparse

    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks (GPU): dense vs act24 sparse")
    p.add_argument("what", choices=["ffn", "prefill"],
                   help="ffn: the FFN forward (GPU); prefill: a Nemotron-like model's prefill and decode")
    p.add_argument("--backward", action="store_true", help="ffn: forward + backward (training), to ffn_train.json")
    p.add_argument("--tokens", type=int, nargs="+",
                   help="token counts (default: 2048 ... 32768; prefill: those within the model's "
                        "max_position_embeddings, and 64 128 on a CPU or with --config tiny)")
    p.add_argument("--shape", type=int, nargs=2, action="append", metavar=("D", "H"), help="model dim and hidden size")
    p.add_argument("--config", choices=["1b", "tiny"], help="prefill model (default: 1b on a GPU, tiny on CPU)")
    p.add_argument("--model", metavar="PATH_OR_ID",
                   help="prefill: your causal LM instead (a local folder or a hub id, through transformers' "
                        "from_pretrained), converted with act24.convert")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="prefill --model: run the model's own code from its folder or hub repository "
                        "(transformers' trust_remote_code)")
    p.add_argument("--out", default="results", help="folder for the JSON results (default: results)")
    p.add_argument("--rounds", type=_positive_int, default=None,
                   help="rounds of alternated timings (A B ... B A) per row (default: 3; 1 for prefill on a CPU)")
    p.set_defaults(run=run)
