"""Is the Jacobi eigendecomposition (`core/jacobi.py`) cheaper in a step than `torch.linalg.eigh`'s host sync?

`gram_root` (gradient weighting on features across processes) runs every
step outside a CUDA graph. `torch.linalg.eigh` there costs one read of its
status back to the host, which stalls the queue of launched work;
`symmetric_eigh` costs no sync but a few hundred small kernel launches.
Which is cheaper depends on the device and on how far the host runs ahead,
so this measures both in a step-like loop: some device work (a matmul of
`--work` size) is queued, then the K x K float64 decomposition, a few
times, and the loop's time per iteration is reported (and the ratio).
Usage: python benchmarks/eigh.py [--device cuda] [--tasks 2 3 5 8]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from hydranet.core.jacobi import symmetric_eigh  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def per_iteration(solve, k: int, device: torch.device, work: int, iterations: int) -> float:
    """Seconds per iteration of: queue a (work x work) matmul, then decompose a K x K Gram matrix."""
    a = torch.randn(work, work, device=device)
    g = torch.randn(k, 16, dtype=torch.float64, device=device)
    gram = g @ g.T
    for _ in range(3):  # warm-up: kernels, caches, the Jacobi solver's fixed tensors
        solve(gram)
    sync(device)
    times = []
    for _ in range(iterations):
        started = time.perf_counter()
        for _ in range(5):
            a = (a @ a).tanh()
            solve(gram + a[0, 0].double() * 0)
        sync(device)
        times.append((time.perf_counter() - started) / 5)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tasks", type=int, nargs="+", default=[2, 3, 5, 8], help="K: the Gram matrix's size")
    parser.add_argument("--work", type=int, default=1024, help="side of the matmul queued before each solve")
    parser.add_argument("--iterations", type=int, default=20)
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"device {device}, torch {torch.__version__}, matmul {args.work}x{args.work} before each solve")
    print("| K | linalg.eigh ms/iter | jacobi ms/iter | jacobi / eigh |")
    print("|---|---|---|---|")
    for k in args.tasks:
        eigh = per_iteration(torch.linalg.eigh, k, device, args.work, args.iterations)
        jacobi = per_iteration(symmetric_eigh, k, device, args.work, args.iterations)
        print(f"| {k} | {eigh * 1e3:.3f} | {jacobi * 1e3:.3f} | {jacobi / eigh:.2f}x |")


if __name__ == "__main__":
    main()
