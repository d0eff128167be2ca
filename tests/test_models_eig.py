"""models.ep.eig: shapes, dtypes, determinism, small exact cases and bad-input errors."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
import torch

from models.ep import eig

F64 = torch.float64


def rotated(lam: list[float], seed: int = 0, dtype: torch.dtype = F64) -> torch.Tensor:
    """Q diag(lam) Q^T, exactly symmetric."""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(len(lam), len(lam), generator=g, dtype=F64))
    A = (Q * torch.tensor(lam, dtype=F64)) @ Q.T
    return ((A + A.T) / 2).to(dtype)


INDEF = rotated([-5.0, -1.0, 0.5, 3.0])


# --------------------------------------------------------------------------- #
# results: shapes, dtypes, histories
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("dtype", (torch.float64, torch.float32))
def test_power_iteration_shapes_and_dtypes(dtype):
    A = INDEF.to(dtype)
    res = eig.power_iteration(eig.dense_matvec(A), 4, steps=30, dtype=dtype)
    assert res.vector.shape == (4,) and res.vector.dtype == dtype
    assert len(res.rayleigh) == len(res.residuals) == res.iterations + 1 == 31
    assert not res.converged and res.shift == 0.0
    assert math.isclose(float(torch.linalg.vector_norm(res.vector)), 1.0, rel_tol=1e-5)
    assert res.scale <= float(torch.linalg.matrix_norm(A.double(), 2)) * (1 + 1e-5)


def test_power_iteration_finds_the_largest_abs_end_and_shift_fixes_it():
    mv = eig.dense_matvec(INDEF)
    plain = eig.power_iteration(mv, 4, tol=1e-10)
    assert plain.converged and abs(plain.value + 5) < 1e-8  # lambda_min, the largest |lambda|
    s = eig.gershgorin_shift(INDEF)
    assert s >= 5 - 1e-12  # >= -lambda_min: A + s I is PSD
    shifted = eig.shifted_power_iteration(mv, 4, s, tol=1e-10)
    assert shifted.converged and abs(shifted.value - 3) < 1e-8
    ps = eig.power_shift(mv, 4, tol=1e-10)
    assert ps >= 5 - 1e-8
    assert abs(eig.shifted_power_iteration(mv, 4, ps, tol=1e-10).value - 3) < 1e-8


def test_lanczos_shapes_and_full_spectrum():
    res = eig.lanczos(eig.dense_matvec(INDEF), 4, 4)
    assert res.ritz_values.shape == (4,) and res.ritz_vectors.shape == (4, 4)
    assert res.residuals.shape == (4,) and res.alpha.shape == (4,) and res.beta.shape == (3,)
    assert res.steps == 4 and res.history == []  # per-step Ritz values only on request (or with tol)
    assert len(eig.lanczos(eig.dense_matvec(INDEF), 4, 4, history=True).history) == 4
    assert torch.allclose(res.ritz_values, torch.tensor([-5.0, -1.0, 0.5, 3.0], dtype=F64), atol=1e-12)
    assert res.lambda_max == float(res.ritz_values[-1]) and res.lambda_min == float(res.ritz_values[0])
    Q = res.basis
    assert torch.allclose(Q.T @ Q, torch.eye(4, dtype=F64), atol=1e-13)


def test_lanczos_stops_early_when_converged_and_breaks_down_on_invariant_subspace():
    A = torch.diag(torch.arange(1.0, 21.0, dtype=F64))
    A[19, 19] = 100.0  # an isolated top eigenvalue converges in a few steps
    res = eig.lanczos(eig.dense_matvec(A), 20, 20, tol=1e-8, which="LA")
    assert res.converged and res.steps < 20 and abs(res.lambda_max - 100) < 1e-6
    v0 = torch.zeros(20, dtype=F64)
    v0[[0, 5]] = 1.0  # spans a 2-dimensional invariant subspace of the diagonal A
    br = eig.lanczos(eig.dense_matvec(A), 20, 10, v0=v0)
    assert br.breakdown and br.steps == 2
    assert torch.allclose(br.ritz_values, torch.tensor([1.0, 6.0], dtype=F64), atol=1e-12)


def test_arnoldi_shapes_and_a_rotation_scaling_pair():
    A = torch.tensor([[0.5, -2.0, 0.0], [2.0, 0.5, 0.0], [0.0, 0.0, 1.0]], dtype=F64)  # 0.5 +- 2i, 1
    res = eig.arnoldi(eig.dense_matvec(A), 3, 3)
    assert res.ritz_values.shape == (3,) and res.ritz_vectors.shape == (3, 3) and res.residuals.shape == (3,)
    assert res.ritz_values.dtype == torch.complex128
    assert abs(res.leading - complex(0.5, 2.0)) < 1e-12  # the pair leads by modulus, Im >= 0 first
    assert abs(complex(res.ritz_values[1]) - complex(0.5, -2.0)) < 1e-12
    lr = eig.arnoldi(eig.dense_matvec(A), 3, 3, which="LR")
    assert abs(lr.leading - 1.0) < 1e-12  # largest real part
    assert float(res.residuals.max()) < 1e-12


def test_restarted_arnoldi_converges_with_small_k():
    g = torch.Generator().manual_seed(4)
    n = 30
    J = torch.randn(n, n, generator=g, dtype=F64) / math.sqrt(n)
    J[0, 0] = 3.0  # a dominant outlier (Gershgorin-separated from the circular bulk)
    res = eig.arnoldi(eig.dense_matvec(J), n, 6, tol=1e-10, restarts=50)
    lam = eig.dense_eigvals(J)[0]
    assert res.converged and abs(res.leading - complex(lam)) < 1e-8


def test_map_leading_eigs_mu():
    J = torch.diag(torch.tensor([-0.5, -2.0, 0.3], dtype=F64))
    res = eig.map_leading_eigs(eig.dense_matvec(J), 3, 0.1, 3)
    assert abs(complex(res.lam[0]) - 1.03) < 1e-12  # |1 + 0.1 mu| largest for mu = 0.3
    assert abs(complex(res.mu[0]) - 0.3) < 1e-10 and res.eps == 0.1


def test_dense_wrappers_and_abscissae():
    vals = eig.dense_eigvalsh(INDEF)
    assert torch.allclose(vals, torch.tensor([-5.0, -1.0, 0.5, 3.0], dtype=F64), atol=1e-12)
    w, V = eig.dense_eigh(INDEF)
    assert torch.allclose(INDEF @ V, V * w, atol=1e-12)
    N = torch.tensor([[-1.0, 10.0], [0.0, -2.0]], dtype=F64)  # stable but strongly non-normal
    assert eig.dense_eig(N).dtype == torch.complex128 and eig.dense_eig(INDEF).dtype == F64
    alpha = eig.spectral_abscissa(N)
    assert alpha == -1.0
    omegas = {m: eig.numerical_abscissa(N, m, tol=1e-10) for m in ("dense", "lanczos", "shifted_power")}
    exact = -1.5 + math.sqrt(0.25 + 25.0)  # lambda_max of [[-1, 5], [5, -2]]
    for m, om in omegas.items():
        assert abs(om - exact) < 1e-8, (m, om)
    assert exact > 0 > alpha  # omega > 0 > alpha: transient growth despite stability
    # plain power iteration returns lambda_min of Sym(N) (|-6.52| > 3.52): the 003 artifact
    assert eig.numerical_abscissa(N, "power", tol=1e-10) < 0
    assert torch.equal(eig.sym_part(N), eig.sym_part(N).T)


def test_matrix_free_sym_matvec_and_map_operator():
    J = torch.tensor([[1.0, 2.0], [0.0, 3.0]], dtype=F64)
    v = torch.tensor([1.0, -1.0], dtype=F64)
    S = eig.sym_matvec(lambda x: J @ x, lambda x: J.T @ x)
    assert torch.equal(S(v), eig.sym_part(J) @ v)
    M = eig.map_operator(lambda x: J @ x, 0.5)
    assert torch.equal(M(v), v + 0.5 * (J @ v))


# --------------------------------------------------------------------------- #
# determinism and seeds
# --------------------------------------------------------------------------- #
def test_same_seed_same_result_bitwise():
    mv = eig.dense_matvec(INDEF)
    a = eig.power_iteration(mv, 4, steps=20, seed=7)
    b = eig.power_iteration(mv, 4, steps=20, seed=7)
    assert a.rayleigh == b.rayleigh and torch.equal(a.vector, b.vector)
    la, lb = eig.lanczos(mv, 4, 3, seed=7), eig.lanczos(mv, 4, 3, seed=7)
    assert torch.equal(la.ritz_values, lb.ritz_values)
    aa, ab = eig.arnoldi(mv, 4, 3, seed=7), eig.arnoldi(mv, 4, 3, seed=7)
    assert torch.equal(aa.ritz_values, ab.ritz_values)


def test_start_vector_seeds_and_dtypes():
    v = eig.start_vector(16, 1)
    assert v.shape == (16,) and v.dtype == F64
    assert math.isclose(float(torch.linalg.vector_norm(v)), 1.0, rel_tol=1e-15)
    assert not torch.equal(v, eig.start_vector(16, 2))
    assert torch.equal(v, eig.start_vector(16, 1))
    v32 = eig.start_vector(16, 1, torch.float32)
    assert v32.dtype == torch.float32 and torch.allclose(v32.double(), v, atol=1e-6)


def test_no_global_rng_touched():
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    eig.power_iteration(eig.dense_matvec(INDEF), 4, steps=5, seed=3)
    eig.lanczos(eig.dense_matvec(INDEF), 4, 4, seed=3)
    assert torch.equal(torch.rand(1), before)


# --------------------------------------------------------------------------- #
# bad input: clear errors naming the problem
# --------------------------------------------------------------------------- #
MV = eig.dense_matvec(INDEF)


@pytest.mark.parametrize("call, match", [
    (lambda: eig.power_iteration(MV, 0), "n must be >= 1"),
    (lambda: eig.power_iteration(MV, -3), "n must be >= 1"),
    (lambda: eig.power_iteration(MV, 2.5), "must be an int"),
    (lambda: eig.power_iteration(MV, True), "must be an int"),
    (lambda: eig.power_iteration(MV, 4, steps=0), "steps must be an int >= 1"),
    (lambda: eig.power_iteration(MV, 4, tol=-1.0), "tol must be a finite number > 0"),
    (lambda: eig.power_iteration(MV, 4, tol=float("nan")), "tol must be a finite number > 0"),
    (lambda: eig.shifted_power_iteration(MV, 4, float("inf")), "shift must be finite"),
    (lambda: eig.lanczos(MV, 4, 5), r"1 <= k <= n = 4, got k = 5"),
    (lambda: eig.lanczos(MV, 4, 0), r"1 <= k <= n = 4, got k = 0"),
    (lambda: eig.lanczos(MV, 4, 2, which="XX"), "which must be one of"),
    (lambda: eig.arnoldi(MV, 4, 9), r"1 <= k <= n = 4, got k = 9"),
    (lambda: eig.arnoldi(MV, 4, 2, which="SM"), "which must be one of"),
    (lambda: eig.arnoldi(MV, 4, 2, restarts=-1), "restarts must be an int >= 0"),
    (lambda: eig.arnoldi(MV, 4, 2, which="LR", restarts=3), "restarts need which='LM'"),
    (lambda: eig.map_leading_eigs(MV, 4, 0.0, 2), "eps must be nonzero"),
    (lambda: eig.power_iteration(MV, 3), r"matvec failed on a vector of shape \(3,\)"),
    (lambda: eig.power_iteration(lambda v: torch.ones(4, dtype=F64), 3), r"matvec returned \(4,\), expected shape \(3,\)"),
    (lambda: eig.power_iteration(lambda v: v * float("nan"), 4), "matvec returned non-finite"),
    (lambda: eig.power_iteration(MV, 4, v0=torch.zeros(4, dtype=F64)), "start vector is zero"),
    (lambda: eig.power_iteration(MV, 4, v0=torch.ones(3, dtype=F64)), r"start vector must have shape \(4,\)"),
    (lambda: eig.power_iteration(MV, 4, v0=torch.tensor([1.0, float("inf"), 0, 0], dtype=F64)), "non-finite"),
    (lambda: eig.power_iteration(MV, 4, dtype=torch.float32), "matvec failed on .*torch.float32"),
    (lambda: eig.power_iteration(lambda v: v.double(), 4, dtype=torch.float32), "matvec returned torch.float64"),
    (lambda: eig.dense_matvec(torch.ones(2, 3)), r"not square: shape \(2, 3\)"),
    (lambda: eig.dense_matvec(torch.ones(3)), r"expected a 2-D matrix, got shape \(3,\)"),
    (lambda: eig.dense_matvec(torch.ones(0, 0)), "empty"),
    (lambda: eig.dense_matvec(torch.ones(2, 2, dtype=torch.int64)), "floating point"),
    (lambda: eig.dense_matvec([[1.0]]), "expected a torch.Tensor"),
    (lambda: eig.dense_eigvalsh(torch.tensor([[1.0, float("nan")], [0.0, 1.0]])), r"non-finite entry nan at \(0, 1\)"),
    (lambda: eig.dense_eigvalsh(torch.tensor([[1.0, 2.0], [0.0, 1.0]])), "not symmetric"),
    (lambda: eig.spectral_abscissa(torch.ones(2, 3)), "not square"),
    (lambda: eig.numerical_abscissa(INDEF, "arpack"), "method must be one of"),
    (lambda: eig.dense_eigvals(INDEF, which="SR"), "which must be one of"),
])
def test_bad_input_raises_a_clear_error(call, match):
    with pytest.raises(eig.EigInputError, match=match):
        call()


def test_eig_input_error_is_a_value_error():
    assert issubclass(eig.EigInputError, ValueError)


def test_models_ep_eig_imports_neither_properties_nor_certify():
    tree = ast.parse(Path(eig.__file__).read_text(encoding="utf-8"))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    assert not roots & {"properties", "certify"}, roots
