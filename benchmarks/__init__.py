"""Benchmarks: `python -m benchmarks` runs every module and regenerates BENCHMARKS.md.

Each module `benchmarks/<name>.py` exposes `run(smoke: bool) -> dict` (see `benchmarks.common`).
"""
