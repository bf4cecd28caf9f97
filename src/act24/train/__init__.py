"""Training language models with act24 FFNs."""

from .data import BatchSampler, Corpus, load_corpus
from .loop import TrainConfig, Trainer

__all__ = ["BatchSampler", "Corpus", "TrainConfig", "Trainer", "load_corpus"]
