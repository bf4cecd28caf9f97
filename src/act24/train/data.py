"""Training text: the Python standard library by default (on every machine), or files you name.

Tokens are bytes (vocabulary 256): no tokenizer to train, download or cache. Documents are
split into train/validation by file, so no file contributes to both.
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


@dataclass(frozen=True)
class Corpus:
    train: torch.Tensor  # uint8 [N]
    val: torch.Tensor  # uint8 [M]
    source: str
    files: int


def _is_validation(path: pathlib.Path, root: pathlib.Path) -> bool:
    # a stable 1-in-20 choice by file name, independent of the machine's file order
    return zlib.crc32(str(path.relative_to(root)).encode()) % 20 == 0


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


def load_corpus(path: str | pathlib.Path | None = None) -> Corpus:
    """Text from `path` (a file or a folder of text/jsonl files), or the standard library's source."""
    if path is None:
        root = pathlib.Path(sysconfig.get_paths()["stdlib"])
        files = sorted(p for p in root.rglob("*.py") if "site-packages" not in p.parts)
        source = f"Python standard library ({root})"
    else:
        root = pathlib.Path(path)
        if not root.exists():
            raise FileNotFoundError(f"--data {path}: no such file or folder")
        files = _files(root)
        source = str(root)
    if not files:
        raise ValueError(f"--data {source}: no text files found (looked for {', '.join(sorted(TEXT_SUFFIXES))})")
    train, val = [], []
    for f in files:
        doc = _read_document(f)
        if doc:
            (val if len(files) > 1 and _is_validation(f, root) else train).append(doc)
    if not train:
        raise ValueError(f"--data {source}: the files are empty")
    if not val:  # one file, or no file hashed into validation: hold out the last 5% of the text
        text = SEPARATOR.join(train)
        cut = int(len(text) * 0.95)
        train, val = [text[:cut]], [text[cut:]]
    as_tensor = lambda docs: torch.frombuffer(bytearray(SEPARATOR.join(docs)), dtype=torch.uint8)  # noqa: E731
    return Corpus(as_tensor(train), as_tensor(val), source, len(files))


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
