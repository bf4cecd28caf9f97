"""What every benchmark result carries, and how it is timed."""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import statistics
import subprocess
import time

import torch


def median_ms(fn, warmup_ms: int = 25, rep_ms: int = 100) -> float:
    """Median of CUDA-event timings (triton's do_bench); on a CPU, of wall-clock timings."""
    if not torch.cuda.is_available():
        return wall_median_ms(fn, reps=5)
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median"))


ROUNDS = 3  # of alternating timings (alternating_medians)


def alternating_medians(fns: dict, rounds: int = ROUNDS) -> dict[str, float]:
    """{name: median ms} of each fn, timed in rounds that run the fns in order and then in reverse
    (A B C C B A ...), after one untimed call each (compiles, algorithm searches).

    Timing one fn after the other favours the first: the H200 runs large GEMMs at its 700 W power
    cap, where the SM clock settles ~7% below the clock a run starts with after a pause (a compile,
    a decode), measured 1515 against 1635 MHz. Alternating puts every fn in both places."""
    for fn in fns.values():
        fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    order = list(fns)
    for _ in range(rounds):
        for name in order + order[::-1]:
            samples[name].append(median_ms(fns[name]))
    return {name: statistics.median(v) for name, v in samples.items()}


def cuda_graph_replay(fn, warmup: int = 3):
    """fn captured in a CUDA graph after warm-up calls on a side stream (compiles, algorithm searches
    and caches happen there); returns the graph's replay. A replay skips the host work of every
    call inside fn: Python and kernel launches."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def graph_timings(dense_compiled, sparse, rounds: int = ROUNDS) -> dict:
    """dense_compiled_graph_ms, sparse_graph_ms: medians of each fn's CUDA-graph replay (alternated, see
    alternating_medians), and their ratio speedup_graph; a capture that fails is reported as
    name_graph_error (after the other timings of a row, so nothing else is lost)."""
    out, replays = {}, {}
    for name, fn in (("dense_compiled", dense_compiled), ("sparse", sparse)):
        try:
            replays[name] = cuda_graph_replay(fn)
        except Exception as e:  # report what did not capture instead of losing the row
            out[f"{name}_graph_error"] = f"{type(e).__name__}: {str(e)[:200]}"
    out.update({f"{name}_graph_ms": ms for name, ms in alternating_medians(replays, rounds).items()})
    if "dense_compiled_graph_ms" in out and "sparse_graph_ms" in out:
        out["speedup_graph"] = out["dense_compiled_graph_ms"] / out["sparse_graph_ms"]
    return out


def host_issue_ms(fn, calls: int = 50, warmup: int = 1) -> float:
    """Host time per call of issuing `calls` calls back to back, without synchronising in between (what
    a call costs the CPU, while the GPU queue does not fill); the GPU is drained before and after."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    issued = time.perf_counter() - start
    sync()
    return issued / calls * 1e3


def wall_median_ms(fn, reps: int = 5) -> float:
    """Median wall-clock time of whole calls (median_ms's stand-in without a GPU)."""
    fn()  # warm-up
    times = []
    for _ in range(reps):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def commit() -> str:
    """The source commit: $ACT24_COMMIT (for copies of the tree without .git), else git's HEAD, with
    "-dirty" when tracked code (src, scripts, pyproject.toml; not results or docs) differs from it."""
    if os.environ.get("ACT24_COMMIT"):
        return os.environ["ACT24_COMMIT"]
    here = pathlib.Path(__file__).resolve().parent
    try:
        git = lambda *args: subprocess.check_output(["git", *args], cwd=here, text=True, stderr=subprocess.DEVNULL)
        sha = git("rev-parse", "HEAD").strip()
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ":/src", ":/scripts", ":/pyproject.toml").strip()
    except Exception:
        return "unknown"
    if len(sha) != 40:
        return "unknown"
    return sha + ("-dirty" if dirty else "")


def header() -> dict:
    return {
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "commit": commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
    }


def overwrite_problem(out_dir: str | os.PathLike, topic: str) -> str | None:
    """Why a run on this machine must not replace `out_dir/topic.json` (it holds another GPU's results,
    such as the committed tables; a CPU's smoke-test results may be replaced), or None."""
    path = pathlib.Path(out_dir) / f"{topic}.json"
    try:
        theirs = json.loads(path.read_text()).get("gpu")
    except (OSError, ValueError, AttributeError):
        return None  # absent or unreadable: nothing worth keeping
    ours = header()["gpu"]
    if theirs in (None, "cpu", ours):
        return None
    return f"{path} holds results measured on {theirs}, and this machine is {ours}: pass --out DIR to write elsewhere"


def write_result(out_dir: str | os.PathLike, topic: str, payload: dict) -> pathlib.Path:
    path = pathlib.Path(out_dir) / f"{topic}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(path)
    return path


def print_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> None:
    """columns: (key, heading, format spec)."""
    cells = [[format(r[k], f) if r.get(k) is not None else "-" for k, _, f in columns] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, (_, h, _) in enumerate(columns)]
    print("  ".join(h.rjust(w) for (_, h, _), w in zip(columns, widths)))
    for c in cells:
        print("  ".join(v.rjust(w) for v, w in zip(c, widths)))
