"""Training text: the Python standard library by default (on every machine), files you name,
or a Hugging Face dataset (`hf:NAME[:CONFIG]`, when `datasets` is installed and reachable).

Tokens are bytes (vocabulary 256): no tokenizer to train, download or cache. Documents are
split into train/validation by file (by record for datasets), so none contributes to both.
"""

from __future__ import annotations

import json
import pathlib
import sysconfig
import zlib
from dataclasses import dataclass

import torch

TEXT_SUFFIXES = {".txt", ".md", ".rst", ".py", ".jsonl", ".json", ".c", ".h", ".html", ".tex", ".csv"}
SEPARATOR = b"\n\n"
HF_PREFIX = "hf:"
HF_MAX_BYTES = 2**30  # datasets are streamed: the first GiB of text is plenty for byte-level models


@dataclass(frozen=True)
class Corpus:
    train: torch.Tensor  # uint8 [N]
    val: torch.Tensor  # uint8 [M]
    source: str
    files: int
    spec: str | None = None  # what load_corpus was given: a resumed run reloads the same data


def _is_validation(key: str) -> bool:
    # a stable 1-in-20 choice by name, independent of the machine's file order
    return zlib.crc32(key.encode()) % 20 == 0


def _read_document(path: pathlib.Path) -> bytes:
    data = path.read_bytes()
    if path.suffix == ".jsonl":
        texts = []
        for n, line in enumerate(data.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise ValueError(f'{path}:{n}: each jsonl line must be an object with a "text" string')
            texts.append(record["text"].encode())
        return SEPARATOR.join(texts)
    return data


def _files(root: pathlib.Path) -> list[pathlib.Path]:
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES)


def _hf_documents(spec: str) -> tuple[list[tuple[str, bytes]], str]:
    """(record index, text) of the train split of `hf:NAME[:CONFIG]`, streamed up to HF_MAX_BYTES."""
    name, _, config = spec[len(HF_PREFIX):].partition(":")
    if not name:
        raise ValueError(f"--data {spec}: name a dataset, e.g. hf:wikitext:wikitext-103-raw-v1")
    try:
        import datasets
    except ImportError:
        raise ValueError(f"--data {spec}: needs the `datasets` package (pip install datasets)") from None
    try:
        records = datasets.load_dataset(name, config or None, split="train", streaming=True)
    except Exception as e:  # offline, unknown name, ...: say which and why
        raise ValueError(f"--data {spec}: could not load the dataset: {type(e).__name__}: {e}") from None
    docs, total = [], 0
    for i, record in enumerate(records):
        text = record.get("text") if isinstance(record, dict) else None
        if not isinstance(text, str):
            raise ValueError(f'--data {spec}: record {i} has no "text" string (columns: {sorted(record)})')
        if text:
            docs.append((str(i), text.encode()))
            total += len(docs[-1][1])
        if total >= HF_MAX_BYTES:
            break
    return docs, f"Hugging Face dataset {name}" + (f" ({config})" if config else "")


def _file_documents(path: str | pathlib.Path | None) -> tuple[list[tuple[str, bytes]], str]:
    if path is None:
        root = pathlib.Path(sysconfig.get_paths()["stdlib"])
        files = sorted(p for p in root.rglob("*.py") if "site-packages" not in p.parts)
        source = f"Python standard library ({root})"
    else:
        root = pathlib.Path(path)
        if not root.exists():
            raise FileNotFoundError(f"--data {path}: no such file or folder")
        files = _files(root)
        source = str(root.resolve())  # one name for the data however the path was written
    if not files:
        raise ValueError(f"--data {source}: no text files found (looked for {', '.join(sorted(TEXT_SUFFIXES))})")
    return [(str(f.relative_to(root)) if f != root else f.name, _read_document(f)) for f in files], source


def load_corpus(path: str | pathlib.Path | None = None) -> Corpus:
    """Text from `path` (a file or a folder of text/jsonl files, or hf:NAME[:CONFIG]), or the
    standard library's source."""
    if isinstance(path, str) and path.startswith(HF_PREFIX):
        docs, source = _hf_documents(path)
    else:
        docs, source = _file_documents(path)
    texts = [(key, doc) for key, doc in docs if doc]
    if not texts:
        raise ValueError(f"--data {source}: the documents are empty")
    train = [doc for key, doc in texts if not _is_validation(key)]
    val = [doc for key, doc in texts if _is_validation(key)]
    if not train or not val:  # one document, or all on one side: hold out the last 5% of the text
        text = SEPARATOR.join(doc for _, doc in texts)
        cut = int(len(text) * 0.95)
        train, val = [text[:cut]], [text[cut:]]
    as_tensor = lambda docs: torch.frombuffer(bytearray(SEPARATOR.join(docs)), dtype=torch.uint8)  # noqa: E731
    return Corpus(as_tensor(train), as_tensor(val), source, len(docs), _spec(path))


def _spec(path) -> str | None:
    """What a resumed run passes to load_corpus: the absolute path of file data (a relative one would
    depend on the working directory), the hf: name as given, None for the standard library."""
    if path is None:
        return None
    if isinstance(path, str) and path.startswith(HF_PREFIX):
        return path
    return str(pathlib.Path(path).resolve())


class BatchSampler:
    """Random windows of seq_len + 1 tokens; the generator's state is saved in checkpoints."""

    def __init__(self, tokens: torch.Tensor, seq_len: int, batch_size: int, seed: int, split: str):
        if tokens.numel() < seq_len + 1:
            raise ValueError(
                f"the {split} split has {tokens.numel()} tokens, fewer than one sequence of {seq_len} + 1: "
                "use more data or a shorter --seq-len"
            )
        self.tokens, self.seq_len, self.batch_size = tokens, seq_len, batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(0, self.tokens.numel() - self.seq_len, (self.batch_size,), generator=self.generator)
        windows = torch.stack([self.tokens[s : s + self.seq_len + 1] for s in starts.tolist()]).long()
        windows = windows.to(device, non_blocking=True)
        return windows[:, :-1], windows[:, 1:]
