"""Benchmarks behind the figures in DESIGN.md: run each as `python -m benchmarks.<name>`."""
