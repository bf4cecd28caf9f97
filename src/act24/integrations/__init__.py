"""Integrations with other model code (Hugging Face transformers, plain PyTorch models)."""

from .conversion import ConversionReport, convert

__all__ = ["ConversionReport", "convert"]
