"""Benchmarks: dense vs sparse in one process, medians of CUDA-event timings."""
