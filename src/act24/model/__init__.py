"""Decoder-only language model with a pluggable FFN (swiglu | relu2 | relu2 with 2:4 after warm-up)."""

from .config import FFN_KINDS, PRESETS, ModelConfig, preset
from .transformer import DecoderLM

__all__ = ["FFN_KINDS", "PRESETS", "DecoderLM", "ModelConfig", "preset"]
