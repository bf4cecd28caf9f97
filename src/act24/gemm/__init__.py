"""Sparse GEMM backends."""
