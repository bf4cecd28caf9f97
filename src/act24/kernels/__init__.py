"""Triton kernels, one topic per file, each with its host wrapper."""
