"""Seed derivation and seeded generators.

All randomness in `models` flows from explicit integer seeds through these helpers, so
two runs with the same seeds draw the same numbers and no global RNG is ever touched.
Draws are made on the CPU, so every backend (cpu, cuda) sees identical inputs.
"""

from __future__ import annotations

import hashlib

import torch

_SEED_MASK = (1 << 63) - 1


def derive_seed(*parts: object) -> int:
    """Map a tuple of labels and integers to a 63-bit seed.

    Why: separate consumers (model init, training batches, held-out sets) get independent
    streams from one user seed without any chance of accidental stream sharing.
    """
    text = "\x1f".join(repr(p) for p in parts).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") & _SEED_MASK


def cpu_generator(seed: int) -> torch.Generator:
    """A fresh CPU generator seeded with `seed` (the only RNG source in `models`)."""
    gen = torch.Generator(device="cpu")
    gen.manual_seed(int(seed) & _SEED_MASK)
    return gen


def random_rotation(K: int, gen: torch.Generator) -> torch.Tensor:
    """A Haar-distributed (K, K) orthogonal matrix in float64 on the CPU.

    QR of a Gaussian matrix with the signs of diag(R) folded into Q (Mezzadri 2007);
    without the sign fix the distribution is not uniform.
    """
    G = torch.randn(K, K, generator=gen, dtype=torch.float64)
    Q, R = torch.linalg.qr(G)
    signs = torch.sign(torch.diagonal(R))
    signs[signs == 0] = 1.0
    return Q * signs
