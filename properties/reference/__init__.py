"""High-precision references: exact conversion, arb enclosures, mpmath mirrors, norm bounds.

`ball` and `mp` expose the same names (matpow, solve, richardson_error,
richardson_closed_form) for the two engines; use them qualified, e.g. `ball.matpow`.
"""

from . import ball, mp
from .ball import max_abs_diff, norm2_diff_upper, vec_norm2
from .convert import (
    MP_DPS,
    PREC_BITS,
    arb_lower,
    arb_mat_radius_max,
    arb_mat_to_numpy_mid,
    arb_upper,
    precision,
    to_arb,
    to_arb_mat,
    to_mpf,
    to_mpf_matrix,
    workdps,
)
from .normbound import (
    certify_upper_bound,
    identity_minus_product,
    norm2_lower,
    norm2_upper,
    rho_upper,
)

__all__ = [
    "ball",
    "mp",
    "MP_DPS",
    "PREC_BITS",
    "arb_lower",
    "arb_mat_radius_max",
    "arb_mat_to_numpy_mid",
    "arb_upper",
    "certify_upper_bound",
    "identity_minus_product",
    "max_abs_diff",
    "norm2_diff_upper",
    "norm2_lower",
    "norm2_upper",
    "precision",
    "rho_upper",
    "to_arb",
    "to_arb_mat",
    "to_mpf",
    "to_mpf_matrix",
    "vec_norm2",
    "workdps",
]
