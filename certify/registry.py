"""The claim registry: the single source of claim ids, statements and expected verdicts.

Every id of ../shared/CLAIMS.md is registered here exactly once.  Test markers,
the report and the golden files all resolve ids through this module, so a typo
in a marker is a collection error rather than a silently unreported check.
"""

from __future__ import annotations

from dataclasses import dataclass, field

STATUSES = ("verified", "disproved", "conditional", "open", "failed", "unchecked")
FAMILIES = {
    "R": "Richardson decoder at a frozen checkpoint",
    "O": "outer (pretraining) dynamics, linear models",
    "D": "encoder + decoder decomposition",
    "G": "finite-rank GP / KRR",
    "P": "PDE encoder-decoder",
    "F": "Flexformer and nonlinear attention",
    "S": "statistical certificates",
    "E": "equilibrium propagation",
    "B": "backends",
}


@dataclass(frozen=True)
class Claim:
    """One catalogued claim, as the seed states it."""

    id: str
    family: str
    source: str
    statement: str
    check: str
    sut: str
    expected: str
    issue: int
    # Numbers the seed reports, keyed by the evidence name the certificate records.
    seed_values: dict[str, float] = field(default_factory=dict)
    # For a corrected statement from the literature: the catalogued id it corrects.
    corrects: str | None = None

    @property
    def title(self) -> str:
        return self.statement if len(self.statement) <= 90 else self.statement[:87] + "..."

    @property
    def prefix(self) -> str:
        return self.id.split(".", 1)[0]


_CLAIMS: tuple[Claim, ...] = (
    # R: Richardson decoder at a frozen checkpoint (000 sec 2; 001 sec 4; 002 sec 3.1)
    Claim(
        id='richardson.identity',
        family='R',
        source='000 sec 2; 001 sec 4; 002 sec 3.1',
        statement='x_{l+1} = x_l + P(d - H x_l), x* = H^{-1} d, e_l = x_l - x*  =>  e_L = (I - P H)^L e_0 exactly',
        check='identity',
        sut='every preconditioner class: free linear P, diagonal, Flexformer kernel attention P_theta, softmax update map (Jacobian form)',
        expected='verified',
        issue=2,
    ),
    Claim(
        id='richardson.closed_form',
        family='R',
        source='000 sec 2; 001 sec 4; 002 sec 3.1',
        statement='z_0 = 0  =>  z_L = sum_{j<L} (I - P H)^j P d and z_L - z_dagger = -(I - P H)^L z_dagger',
        check='identity',
        sut='every preconditioner class: free linear P, diagonal, Flexformer kernel attention P_theta, softmax update map (Jacobian form)',
        expected='verified',
        issue=2,
    ),
    Claim(
        id='richardson.norm_bound',
        family='R',
        source='000 sec 2; 001 sec 4; 002 sec 3.1',
        statement='||e_L||_2 <= ||I - P H||_2^L ||e_0||_2, violation rate 0 (000 eq 4)',
        check='bound, with a rigorous upper bound on ||I - P H||_2',
        sut='every preconditioner class: free linear P, diagonal, Flexformer kernel attention P_theta, softmax update map (Jacobian form); on held-out tasks of trained checkpoints',
        expected='verified',
        issue=2,
    ),
    Claim(
        id='richardson.certified_risk',
        family='R',
        source='000 sec 2; 001 sec 4; 002 sec 3.1',
        statement='R_dec(L) = K^{-1} E||(I - P H)^L x*||^2 <= K^{-1} E[rho(H,P)^{2L} ||x*||^2]; report error/bound ratio and mean contraction E rho (001 Table 2)',
        check='bound + measured',
        sut='trained decoder checkpoints',
        expected='verified',
        issue=2,
    ),

    # O: outer (pretraining) dynamics, linear models (001 sec 3; 002 sec 3, 5, 6, 7)
    Claim(
        id='decoder.trajectory',
        family='O',
        source='001 sec 3; 002 sec 3, 5, 6, 7',
        statement='P_{s+1} = P_s - eta (P_s C - B)  =>  P_s - P* = (P_0 - P*)(I - eta C)^s, P* = B C^+',
        check='identity',
        sut='linear-attention decoder trainer with population moments',
        expected='verified',
        issue=3,
    ),
    Claim(
        id='decoder.excess_risk_modes',
        family='O',
        source='001 sec 3; 002 sec 3, 5, 6, 7',
        statement='R(P_s) - R(P*) = K^{-1} sum_i lambda_i (1 - eta lambda_i)^{2s} ||(P_0 - P*) q_i||^2',
        check='identity',
        sut='linear-attention decoder trainer with population moments',
        expected='verified',
        issue=3,
    ),
    Claim(
        id='decoder.online_matches_population',
        family='O',
        source='001 sec 3; 002 sec 3, 5, 6, 7',
        statement='observed online risk tracks the predicted population curve (002: max rel discrepancy 4.4e-3, final 0.16245 vs 0.16191)',
        check='statistical + measured',
        sut='online (sampled) decoder training',
        expected='verified',
        issue=3,
    ),
    Claim(
        id='encoder.trajectory',
        family='O',
        source='001 sec 3; 002 sec 3, 5, 6, 7',
        statement='G_s - G* = (G_0 - G*)(I - eta Sigma_z)^s; R_enc(s) = sigma^2 + K^{-1} Tr[(G_s - G*) Sigma_z (G_s - G*)^T]',
        check='identity',
        sut='encoder dictionary trainer',
        expected='verified',
        issue=3,
    ),
    Claim(
        id='encoder.contraction_bound',
        family='O',
        source='001 sec 3; 002 sec 3, 5, 6, 7',
        statement='0 < eta < 2/lambda_max(Sigma_z)  =>  R_enc(s) - sigma^2 <= ||I - eta Sigma_z||^{2s} K^{-1} Tr[(G_0 - G*) Sigma_z (G_0 - G*)^T]',
        check='bound',
        sut='encoder dictionary trainer',
        expected='verified',
        issue=3,
    ),
    Claim(
        id='encoder.heldout_matches_population',
        family='O',
        source='001 sec 3; 002 sec 3, 5, 6, 7',
        statement='held-out R_enc(800) / exact R_enc(800) = 1 within sampling error (001 Table 1: 1.0005)',
        check='statistical + measured',
        sut='encoder dictionary trainer',
        expected='verified',
        issue=3,
    ),
    Claim(
        id='finite_task.erm',
        family='O',
        source='001 sec 3; 002 sec 3, 5, 6, 7',
        statement='P_N = Z D^T (D D^T)^+ satisfies P_N C_N = B_N; excess risk = K^{-1} Tr[(P_N - P*) C (P_N - P*)^T]',
        check='identity',
        sut='decoder fit on N tasks',
        expected='verified',
        issue=3,
    ),
    Claim(
        id='finite_task.rate',
        family='O',
        source='001 sec 3; 002 sec 3, 5, 6, 7',
        statement='E[excess] ~ (sigma_task^2 / K) d_eff / N for N >> d_eff',
        check='order (slope -1 in N)',
        sut='decoder fit on N tasks',
        expected='verified',
        issue=3,
    ),
    Claim(
        id='oracle.tracking',
        family='O',
        source='001 sec 3; 002 sec 3, 5, 6, 7',
        statement='P_{z,s+1} - P*(U_{s+1}) = (P_{z,s} - P*(U_s))(I - eta C_s) + P*(U_s) - P*(U_{s+1})',
        check='identity',
        sut='joint encoder+decoder trainer (stop-gradient)',
        expected='verified',
        issue=3,
    ),
    Claim(
        id='dynamics.noncommuting',
        family='O',
        source='001 sec 3; 002 sec 3, 5, 6, 7',
        statement='E_{s+1} = E_s (I - eta C_s) + D_s  =>  E_s = E_0 prod_{t<s}(I - eta C_t) + sum_tau D_tau prod_{t=tau+1}^{s-1}(I - eta C_t) (ordered products)',
        check='identity',
        sut='joint encoder+decoder trainer (stop-gradient)',
        expected='verified',
        issue=3,
    ),
    Claim(
        id='dynamics.commuting_scalar',
        family='O',
        source='001 sec 3; 002 sec 3, 5, 6, 7',
        statement='diagonal case: p_i(s) closed form and R_dec(s, L) = sum_i w_i(s)(1 - p_i(s) a_i(s))^{2L} (002 sec 6.5; proof-ladder errors ~1e-17)',
        check='identity',
        sut='joint encoder+decoder trainer (stop-gradient); in a commuting configuration',
        expected='verified',
        issue=3,
    ),
    Claim(
        id='closure.scalar_state',
        family='O',
        source='001 sec 3; 002 sec 3, 5, 6, 7',
        statement='"risk alone is a closed state variable" is false: R_0^A = R_0^B = 1 but R_1^A = 0.6724, R_1^B = 0.1936 (002 sec 7)',
        check='counterexample, reproduce these numbers',
        sut='—',
        expected='disproved',
        issue=3,
    ),
    Claim(
        id='closure.spectra_only',
        family='O',
        source='001 sec 3; 002 sec 3, 5, 6, 7',
        statement='"the marginal spectrum of P determines R_L" is false: same eigenvalues and singular values, depth-1 risks 1.5e-33 vs 1.1e-1 (000 sec 7)',
        check='counterexample',
        sut='—',
        expected='disproved',
        issue=3,
    ),
    Claim(
        id='overlap.reconstruction',
        family='O',
        source='001 sec 3; 002 sec 3, 5, 6, 7',
        statement='R_L(P) = K^{-1} E||(I - P H)^L x*||^2 is reproduced from logged overlap order parameters (Tr(PH), Tr(PHPH), Tr(PH S H^T P^T), ...; 000 sec 8: error 1.1e-12 over 108 rows)',
        check='identity',
        sut='checkpoint trajectories of GP and PDE trainers',
        expected='verified',
        issue=3,
    ),

    # D: encoder + decoder decomposition (001 sec 5; 002 sec 5.2, 6.1, 6.3)
    Claim(
        id='encdec.latent_identity',
        family='D',
        source='001 sec 5; 002 sec 5.2, 6.1, 6.3',
        statement='z_L - z* = (I - P_s A_s)^L (z_0 - z*), A_s = U_s^T H U_s (001: max gap 2.8e-17)',
        check='identity',
        sut='low-rank encoder+decoder trainer, every checkpoint',
        expected='verified',
        issue=3,
    ),
    Claim(
        id='encdec.risk_decomposition',
        family='D',
        source='001 sec 5; 002 sec 5.2, 6.1, 6.3',
        statement='R_e2e = R_floor + R_dec + 2 E<beta_dagger - beta, U(z_L - z_dagger)>_{Sigma_x} exactly; ||x_L - x*||^2 <= 2||dec||^2 + 2||enc||^2',
        check='identity + bound',
        sut='low-rank encoder+decoder trainer, every checkpoint; and the Flexformer encoder+decoder',
        expected='verified',
        issue=3,
    ),
    Claim(
        id='encdec.decoder_bound',
        family='D',
        source='001 sec 5; 002 sec 5.2, 6.1, 6.3',
        statement='R_dec <= ||Sigma_x||_2 E[rho_z^{2L} ||z_dagger||^2]',
        check='bound',
        sut='low-rank encoder+decoder trainer, every checkpoint; and the Flexformer encoder+decoder',
        expected='verified',
        issue=3,
    ),
    Claim(
        id='subspace.davis_kahan',
        family='D',
        source='001 sec 5; 002 sec 5.2, 6.1, 6.3',
        statement='sin^2 Theta(U_s, U_ref) <= (||S_s - Sigma_beta||_op / Delta)^2, Delta = lambda_r - lambda_{r+1} of Sigma_beta (001 sec 5.2; 002 sec 5.2)',
        check='bound',
        sut='encoder subspace estimates',
        expected='conditional',
        issue=3,
    ),
    Claim(
        id='prompt.mp_window',
        family='D',
        source='001 sec 5; 002 sec 5.2, 6.1, 6.3',
        statement='whitened prompt covariance spectrum in [(1 - sqrt(g) - t)^2, (1 + sqrt(g) + t)^2], g = K/M, with probability >= 1 - 2 exp(-M t^2 / 2), Gaussian design (002 sec 4)',
        check='statistical',
        sut='prompt sampler',
        expected='disproved',
        issue=3,
    ),
    Claim(
        id='prompt.resolvent',
        family='D',
        source='001 sec 5; 002 sec 5.2, 6.1, 6.3',
        statement='H_M^{-1} - H_inf^{-1} = -H_inf^{-1} D H_inf^{-1} + H_inf^{-1} D H_M^{-1} D H_inf^{-1}, and the norm bound with denominator 1 - ||H_inf^{-1}|| ||D|| (002 sec 4)',
        check='identity + bound',
        sut='prompt sampler',
        expected='conditional',  # bound needs ||H_inf^-1|| ||D|| < 1
        issue=3,
    ),

    # G: finite-rank GP / KRR (000 sec 4)
    Claim(
        id='gp.primal_dual',
        family='G',
        source='000 sec 4',
        statement="A = Lambda^{-1} + s^{-2} Phi^T Phi, d = s^{-2} Phi^T y, z_post = A^{-1} d  =>  phi_q^T z_post = k_q^T (K + s^2 I)^{-1} y with k(x,x') = phi(x)^T Lambda phi(x') (000: gap 1.4e-14); posterior covariances agree too",
        check='identity',
        sut='GP/KRR posterior module',
        expected='verified',
        issue=4,
    ),
    Claim(
        id='gp.method_comparison',
        family='G',
        source='000 sec 4',
        statement='posterior-latent solve by each preconditioner class; risks table, best = free_linear 3.317e-7 (000 sec 4, Fig 1)',
        check='measured',
        sut='GP/KRR preconditioner trainers',
        expected='verified',
        issue=4,
    ),
    Claim(
        id='gp.ntk_local',
        family='G',
        source='000 sec 4',
        statement='Flexformer training on the posterior solve follows r_s = (I - eta J_0 J_0^T / m)^s r_0 locally (000: rel err 6.8e-4) and the error grows with eta*s',
        check='order + measured',
        sut='Flexformer on GP tasks',
        expected='verified',
        issue=4,
    ),

    # P: PDE encoder-decoder (000 sec 5; 001 sec 5.4)
    Claim(
        id='pde.weak_form',
        family='P',
        source='000 sec 5; 001 sec 5.4',
        statement='noise-free prompts satisfy G z = b with G_{(i,r),k} = <A_k u_i, v_r>, b_{(i,r)} = <f_i - A_0 u_i, v_r>',
        check='identity',
        sut='Galerkin operator family A(z) = A_0 + sum_k z_k A_k',
        expected='verified',
        issue=4,
    ),
    Claim(
        id='pde.encoder_recovery',
        family='P',
        source='000 sec 5; 001 sec 5.4',
        statement='z_enc = (G^T G + lambda_z I)^{-1} G^T b recovers z, bias O(lambda_z); 000/001: z MSE 6.1e-8, A rel 6.1e-5',
        check='order + measured',
        sut='PDE prompt encoder',
        expected='verified',
        issue=4,
    ),
    Claim(
        id='pde.method_comparison',
        family='P',
        source='000 sec 5; 001 sec 5.4',
        statement='query decoder u_{l+1} = u_l + P(f* - A(z_enc) u_l) per preconditioner class; best free_linear MSE 5.976e-6, encoded-solve floor 1.7e-9, violation 0 (001 Table 5)',
        check='measured + bound',
        sut='PDE trainers',
        expected='verified',
        issue=4,
    ),
    Claim(
        id='sweep.scaling',
        family='P',
        source='000 sec 5; 001 sec 5.4',
        statement='certified sweep over GP prompt sizes {16, 64}, PDE prompt sizes {4, 16}, K = 4: 96 rows, max violation 0 (000 sec 6, Fig 3)',
        check='bound over the sweep',
        sut='all of the above',
        expected='verified',
        issue=4,
    ),

    # F: Flexformer and nonlinear attention (000 sec 9; 002 sec 8, 12.10)
    Claim(
        id='flexformer.adjoint_gradient',
        family='F',
        source='000 sec 9; 002 sec 8, 12.10',
        statement='finite-set recursion (000 eqs 20-24): lambda_{i,L} = (z_{i,L} - z_i*)/(NK), lambda_{i,l} = (I - P H_i)^T lambda_{i,l+1}, grad_P L_N = sum_i sum_l lambda_{i,l+1} r_{i,l}^T, theta-gradient = DP*[grad_P]; equals autograd and the mpmath reference (000: rel err 1.7e-16 and 1.0e-15)',
        check='identity',
        sut='Flexformer P_theta = D_a A_theta D_v + D_s',
        expected='verified',
        issue=4,
    ),
    Claim(
        id='flexformer.ntk_local',
        family='F',
        source='000 sec 9; 002 sec 8, 12.10',
        statement='decoder training follows the finite-NTK curve locally (000: rel err 5.6e-3, 1.9e-2 on a longer run)',
        check='order + measured',
        sut='Flexformer decoder trainer',
        expected='verified',
        issue=4,
    ),
    Claim(
        id='flexformer.global_theory',
        family='F',
        source='000 sec 9; 002 sec 8, 12.10',
        statement='a closed global theory of nonlinear outer training (000: open)',
        check='open: report the measured gap between the quadratic free-P prediction and nonlinear training',
        sut='Flexformer trainer',
        expected='open',
        issue=4,
    ),
    Claim(
        id='attention.linear_iff_global',
        family='F',
        source='000 sec 9; 002 sec 8, 12.10',
        statement='Delta(z,H,d) = P r for all inputs iff the attention is linear; for softmax the exact object is the map, and P_proj = E[Delta r^T] E[r r^T]^+ is only a diagnostic (002 sec 8)',
        check='identity + counterexample',
        sut='linear and softmax attention update maps',
        expected='verified',
        issue=4,
    ),
    Claim(
        id='attention.qk_gauge',
        family='F',
        source='000 sec 9; 002 sec 8, 12.10',
        statement='W_Q -> A W_Q, W_K -> A^{-T} W_K leaves W_Q^T W_K and the attention output unchanged (002 sec 12.10)',
        check='identity',
        sut='attention module',
        expected='conditional',  # rbf kernel: only orthogonal A
        issue=4,
    ),

    # S: statistical certificates (000 sec 3; 001 sec 2)
    Claim(
        id='eb.formula',
        family='S',
        source='000 sec 3; 001 sec 2',
        statement='R_c <= mean + sqrt(2 V log(2/delta)/n) + 7 c log(2/delta) / (3(n-1)) for losses clipped to [0, c], V the sample variance',
        check='identity (implementation vs mpmath evaluation of the formula)',
        sut='certificate module',
        expected='verified',
        issue=2,
    ),
    Claim(
        id='eb.coverage',
        family='S',
        source='000 sec 3; 001 sec 2',
        statement='P(true clipped risk > bound) <= delta',
        check='statistical over several loss laws (Bernoulli, Beta, clipped Gaussian and chi-square)',
        sut='certificate module',
        expected='verified',
        issue=2,
    ),
    Claim(
        id='eb.heldout',
        family='S',
        source='000 sec 3; 001 sec 2',
        statement='every trained checkpoint reports its clipped EB upper bound (001: decoder 0.1771, Flexformer enc+dec 0.1751, PDE 0.0842)',
        check='measured',
        sut='all trainers',
        expected='verified',
        issue=2,
    ),

    # E: equilibrium propagation (003)
    Claim(
        id='ep.matches_implicit_gradient',
        family='E',
        source='003',
        statement='for a conservative (energy) model with converged free phase, the EP estimate -> the implicit (IFT) gradient = the BPTT gradient at convergence as beta -> 0: one-sided error O(beta), symmetric nudging O(beta^2) (Scellier-Bengio 2017; Laborieux 2021)',
        check='order + identity at the limit',
        sut='energy attention + Hopfield memory block (conservative, tied weights)',
        expected='verified',
        issue=5,
    ),
    Claim(
        id='ep.gdu',
        family='E',
        source='003',
        statement='discrete-time EP updates equal BPTT gradients step by step in the first nudged steps, as beta -> 0 (Ernoult 2019)',
        check='identity in the limit (order)',
        sut='prototypical equilibrium RNN',
        expected='conditional',  # only when the transition derives from a primitive function
        issue=5,
    ),
    Claim(
        id='aep.identity',
        family='E',
        source='003',
        statement='J v - J^T v = 2 A_J v with A_J = (J - J^T)/2, computed matrix-free (jvp - vjp)',
        check='identity',
        sut='damped non-conservative attention block',
        expected='verified',
        issue=5,
    ),
    Claim(
        id='aep.exact_gradient',
        family='E',
        source='003',
        statement='nudged-phase correction -2 A_J(z*)(z - z*) makes the nudged Jacobian J^T at z*, so the AEP estimate -> the IFT gradient for non-conservative dynamics, while uncorrected EP does not (003: cos 0.30 -> 0.9975 toy; attention params 0.75 -> 1.0)',
        check='order + measured',
        sut='damped non-conservative attention block',
        expected='verified',
        issue=5,
    ),
    Claim(
        id='holo.exact_gradient',
        family='E',
        source='003',
        statement='holomorphic EP with N points on a circle of radius r in complex beta reads out the exact gradient up to an error that decays geometrically in N (Laborieux-Zenke 2022)',
        check='order',
        sut='conservative block, and with AEP on the non-conservative block',
        expected='verified',
        issue=5,
    ),
    Claim(
        id='aep.tracking',
        family='E',
        source='003',
        statement='re-linearizing the correction at the moving common mode (z+ + z-)/2 restores the gradient where the frozen linearization fails (003: cos -0.045 -> 0.997 at a plateau checkpoint)',
        check='measured',
        sut='non-conservative block far from linear response',
        expected='conditional',  # restores only if its common mode relaxes to z* and beta is in its window (C1, C2)
        issue=5,
    ),
    Claim(
        id='damping.stable_fixed_point',
        family='E',
        source='003',
        statement='the damped force s (attn(z) - c z) with c >= 1 has a stable fixed point at any attention strength s (003 TL;DR 2)',
        check='bound (spectral abscissa of the Jacobian at the fixed point, over drawn weights and inputs)',
        sut='damped attention block',
        expected='conditional',  # needs c > mu_2(J_attn(z*)): large value maps defeat c >= 1
        issue=5,
    ),
    Claim(
        id='fa.upstream_failure',
        family='E',
        source='003',
        statement="feedback alignment's gradient is faithful only next to the loss (output projection cos ~1.0) and near-random upstream (Q/K/V ~0.25, FFN fc ~ -0.01), while EP/AEP stay >= 0.99 (003 TL;DR 1)",
        check='measured',
        sut='small transformer block',
        expected='conditional',  # near-random upstream only before FA training aligns W with B (Lillicrap 2016)
        issue=5,
    ),
    Claim(
        id='eig.power_iteration_artifact',
        family='E',
        source='003',
        statement='plain power iteration on an indefinite symmetric matrix converges to the largest-|lambda| end, not lambda_max; shifted iteration or Lanczos is needed (003, 2026-07-03)',
        check='counterexample + identity vs dense eig',
        sut="the suite's own eigen utilities",
        expected='verified',
        issue=5,
    ),
    Claim(
        id='ep.training',
        family='E',
        source='003',
        statement='an EP-trained equilibrium block on a small character language model tracks its exact-gradient (BPTT) twin; report both validation cross-entropies and cos(g_EP, g_BPTT) along training',
        check="measured (GPU tier for the seed's scale, tiny CPU config in CI)",
        sut='EP trainer',
        expected='verified',
        issue=5,
    ),

    # B: backends (the design card)
    Claim(
        id='backend.agreement',
        family='B',
        source='the design card',
        statement='each identity holds on every backend (cpu/cuda x float64/float32) within the tolerance derived for that dtype; float32 tolerances come from unit roundoff and size, not from tuning',
        check='identity per backend',
        sut='all models',
        expected='verified',
        issue=2,
    ),
)

# Corrected statements from the literature, each registered as a claim of its own when a
# catalogued claim is found false as stated (its id then names the catalogued one in
# `corrects`).  Ids are not in ../shared/CLAIMS.md; everything else works as for any claim.
_CORRECTED: tuple[Claim, ...] = (
    Claim(
        id='damping.stable_fixed_point_lognorm',
        family='E',
        source='Dahlquist (1959) / Lozinskii (1958): the spectral abscissa is bounded by the logarithmic norm, alpha(M) <= mu_2(M) = lambda_max((M + M^T)/2) (corrects 003 TL;DR 2)',
        statement='at a fixed point z* of F(z) = lam (x - z) + s (attn(z) - c z) with s > 0, lam >= 0: alpha(J_F(z*)) <= -lam - s (c - mu_2(J_attn(z*))), so c > mu_2(J_attn(z*)) makes z* exponentially stable for every attention strength s; c >= 1 suffices only when mu_2(J_attn(z*)) < 1',
        check='bound (dense spectral abscissa of the SUT force against the log-norm bound from the SUT attention map, over drawn weights, inputs, strengths and damping)',
        sut='models.ep.blocks.DampedAttention at its Newton-converged fixed point',
        expected='verified',
        issue=5,
        corrects='damping.stable_fixed_point',
    ),
    Claim(
        id='ep.gdu_primitive',
        family='E',
        source='Ernoult, Grollier, Querlioz, Bengio & Scellier (NeurIPS 2019), Theorem 1, GDU property (corrects 003 Background: the prototypical RNN s <- sigma(W s + W_x x) derives from no primitive function, and there the match fails at t >= 1)',
        statement='if the transition derives from a primitive function, s_{t+1} = dPhi/ds(x, s_t, theta) (dF/ds symmetric), and the free phase has converged, the time-resolved EP updates Delta_s(beta, t) = (s^beta_{t+1} - s^beta_t)/beta and Delta_theta(beta, t) = (dPhi/dtheta(s^beta_{t+1}) - dPhi/dtheta(s^beta_t))/beta tend to -dL/ds_{T-t} and -dL/dtheta_{T-t} of BPTT for every t as beta -> 0: one-sided error O(beta), symmetric O(beta^2)',
        check='order (fitted log-log slope with interval: 1 one-sided, 2 symmetric) + identity at the limit (mpmath, 50 digits)',
        sut='energy-based RNN s <- s - eps dE/ds = dPhi/ds, W = (A + A^T)/2 (models.ep.rnn, kind "primitive")',
        expected='verified',
        issue=5,
        corrects='ep.gdu',
    ),
    Claim(
        id='attention.qk_gauge_dot_kernel',
        family='F',
        source='002 sec 12.10, corrected: the kernel must depend on (q, k) only through q.k (elementary: q.k = e^T W_Q^T A^T A^{-T} W_K e\'; ||A q - A^{-T} k|| != ||q - k|| unless A is orthogonal)',
        statement='for attention whose kernel is a function of q.k (softmax / exp kernel), W_Q -> A W_Q, W_K -> A^{-T} W_K (A invertible) leaves W_Q^T W_K, the attention matrix, P_theta and the update output unchanged; for distance kernels (rbf) only orthogonal A does',
        check='identity (arb) with tolerance scaling with ||A^{-1}||',
        sut='models.attention.gauge_transform on models.Flexformer (exp kernel)',
        expected='verified',
        issue=4,
        corrects='attention.qk_gauge',
    ),
    Claim(
        id='closure.scalar_state_modes',
        family='O',
        source='002 sec 7, corrected: (1 - x)^2 = (1 - y)^2 iff x = y or x + y = 2 (elementary)',
        statement='e_0 = alpha q_i (C q_i = lambda_i q_i) => R_1 = (1 - eta lambda_i)^2 R_0; two such states with R_0^A = R_0^B > 0 have R_1^A != R_1^B iff eta (lambda_i - lambda_j)(2 - eta (lambda_i + lambda_j)) != 0 (002 sec 7 states "lambda_i != lambda_j => R_1 differ", which fails at eta (lambda_i + lambda_j) = 2)',
        check='identity (exact) + counterexample to the statement as given',
        sut='linear decoder outer step models.closure.outer_step (exact rationals and backend)',
        expected='verified',
        issue=3,
        corrects='closure.scalar_state',
    ),
    Claim(
        id='subspace.davis_kahan_yws',
        family='D',
        source='Yu, Wang & Samworth (2015), Biometrika 102(2), Theorem 1 (corrects 001 sec 5.2; 002 sec 5.2)',
        statement='||sin Theta(U_S, U_ref)||_op <= 2 ||S - Sigma||_op / Delta and ||sin Theta||_F <= 2 min(sqrt(r) ||S - Sigma||_op, ||S - Sigma||_F) / Delta, Delta = lambda_r - lambda_{r+1} of Sigma (population gap; the factor 2 is sharp)',
        check='bound (50-digit and arb references over drawn perturbations and the SUT estimates)',
        sut='encoder subspace estimates U_N = Top_r(S_N) (models.encoder)',
        expected='verified',
        issue=3,
        corrects='subspace.davis_kahan',
    ),
    Claim(
        id='prompt.mp_window_vershynin',
        family='D',
        source='Davidson & Szarek (2001); Vershynin (2012), Introduction to the non-asymptotic analysis of random matrices, Cor. 5.35 (corrects 002 sec 4)',
        statement='whitened prompt covariance spectrum in [max(0, 1 - sqrt(g) - t)^2, (1 + sqrt(g) + t)^2], g = K/M, with probability >= 1 - 2 exp(-M t^2 / 2), Gaussian design',
        check='statistical (exact binomial test, family-wise false alarm <= 1e-6)',
        sut='prompt sampler (models.gaussian_prompts)',
        expected='verified',
        issue=3,
        corrects='prompt.mp_window',
    ),
)

SEED_VALUES: dict[str, dict[str, float]] = {
    # 000 sec 4 / summary table: finite-rank GP/KRR primal-dual gap.
    "gp.primal_dual": {"max_primal_dual_gap": 1.443e-14},
    # 002 sec 7 / sec 11: the scalar-closure counterexample.
    "closure.scalar_state": {"R0_A": 1.0, "R0_B": 1.0, "R1_A": 0.6724, "R1_B": 0.1936},
    # 000 sec 7: spectra-only obstruction (the seed's mismatches are float artefacts; ours exact).
    "closure.spectra_only": {"risk_A": 1.541e-33, "risk_B": 1.090e-1, "eigenvalue_mismatch": 0.0,
                             "singular_value_mismatch": 4.4e-16},
    # 000 sec 8: joint overlap logging (108 rows of GP/PDE trajectories there; decoder trajectories here).
    "overlap.reconstruction": {"rows": 108.0, "max_reconstruction_error": 1.137e-12},
    # 002 sec 11 / 12.5: online decoder-only training, final checkpoint s = 800 (the seed's
    # configuration is unknown; ours is named in the keys, see certify/sut_outer.py).
    "decoder.online_matches_population": {
        "lsq_K8_M32_b256_S800.max_abs_discrepancy": 2.0380e-3,
        "lsq_K8_M32_b256_S800.max_rel_discrepancy": 4.3852e-3,
        "lsq_K8_M32_b256_S800.final_observed_risk": 1.624536e-1,
        "lsq_K8_M32_b256_S800.final_predicted_risk": 1.619130e-1,
        "lsq_K8_M32_b256_S800.rel_dist_oracle_final": 8.2055e-3,
    },
    # 001 sec 3.3 / Table 1: encoder-only low-rank recovery, final checkpoint (s = 800).
    "encoder.heldout_matches_population": {
        "table1.heldout_risk": 4.0020466789e-4,
        "table1.exact_risk": 4.0e-4,
        "table1.heldout_over_exact": 1.0005116697,
        "table1.rel_G_error": 4.5093e-4,
        "table1.subspace_sin2": 1.7845e-6,
        "table1.noise_floor": 4.0e-4,
    },
    # 001 Table 3: encoder true subspace sin^2 vs its Davis-Kahan sin^2 bound.
    "subspace.davis_kahan": {"table3.true_sin2": 3.0853e-2, "table3.dk_bound_sin2": 2.0888e-1},
    "richardson.norm_bound": {"violations": 0.0},  # 000 eq 4: violation rate 0
    # 001 Table 2: the decoder-only Flexformer checkpoint.
    "richardson.certified_risk": {
        "flexformer.heldout_risk": 7.6747e-3,
        "flexformer.eb_upper": 1.7710e-1,
        "flexformer.violation_rate": 0.0,
        "flexformer.error_bound_ratio": 2.2833e-2,
        "flexformer.mean_contraction": 1.1031,
        "flexformer.rel_dist_oracle": 2.6788e-1,
        "flexformer.stable_rank": 2.9198,
    },
    # 001 Table 3 ("max identity absolute gap"; 002 sec 11 the same 2.7756e-17).
    "encdec.latent_identity": {"max_identity_gap": 2.7756e-17},
    # 001 Table 3 (low-rank enc+dec) and Table 4 (Flexformer enc+dec).
    "encdec.risk_decomposition": {
        "lowrank.heldout_risk": 4.3266e-3,
        "lowrank.identity_risk": 4.3266e-3,
        "lowrank.decoder_risk": 7.2394e-7,
        "lowrank.decoder_certified": 7.1221e-4,
        "lowrank.sin2_true": 3.0853e-2,
        "flexformer.heldout_risk": 5.8931e-3,
        "flexformer.floor_risk": 2.4169e-3,
        "flexformer.decoder_risk": 1.7448e-3,
        "flexformer.violation_rate": 0.0,
        "flexformer.rigorous_violation_rate": 0.0,
        "flexformer.error_bound_ratio": 4.5485e-1,
        "flexformer.mean_contraction": 8.2571e-1,
        "flexformer.sin2_true": 3.6699e-2,
        # 002 sec 11 (their s = 420 of the online low-rank run)
        "lowrank.floor_risk": 4.3891e-3,
    },
    # 001 Table 3 / 002 sec 12.7: decoder actual vs certified risk.
    "encdec.decoder_bound": {"lowrank.decoder_actual": 7.2394e-7, "lowrank.decoder_certified": 7.1221e-4},
    # 002 sec 11: ||P_z,420 - P_z*(U_420)||_F / ||P_z*(U_420)||_F.
    "oracle.tracking": {"lowrank.tracking_rel": 3.1937e-2},
    # 002 sec 11 / 12.8 "scalar proof ladder max errors" (decoder-only, encoder-only, commuting coupled).
    "dynamics.commuting_scalar": {
        "max_p_closure_error": 4.337e-18,
        "max_gain_closure_error": 6.939e-18,
        "max_rdec_closure_error": 5.551e-17,
    },
    # 000 sec 9: exact-gradient validation (dense-P and parameter-gradient relative errors).
    # 001 Table 5 (000 sec 5): PDE encoder z MSE and A relative error (ours at lambda_z = 1e-4).
    "pde.encoder_recovery": {"z_mse": 6.1356e-8, "A_rel_err": 6.0764e-5},
    "flexformer.adjoint_gradient": {"max_rel_err_grad_P": 1.727e-16, "max_rel_err_grad_theta": 1.048e-15},
    # 000 sec 4 / Fig 1: the best GP/KRR method (the seed states no prompt size: its value
    # stands beside the free_linear risk at both of the sweep's GP prompt sizes).
    "gp.method_comparison": {"n16.free_linear.risk": 3.317e-7, "n64.free_linear.risk": 3.317e-7},
    # 001 Table 5 (000 sec 5): PDE encoder-decoder K = 4 recast (prompt size not stated: both of ours).
    "pde.method_comparison": {
        "M4.free_linear.e2e_mse": 5.9760e-6, "M16.free_linear.e2e_mse": 5.9760e-6,
        "M4.floor_mse": 1.7456e-9, "M16.floor_mse": 1.7456e-9,
        "M4.z_mse": 6.1356e-8, "M16.z_mse": 6.1356e-8,
        "M4.A_rel_err": 6.0764e-5, "M16.A_rel_err": 6.0764e-5,
        "max_violation_rate": 0.0, "best_eb_upper": 8.4150e-2,
    },
    # 000 sec 1 / sec 6, Fig 3: the certified K = 4 scaling sweep.
    "sweep.scaling": {"rows": 96.0, "max_violation": 0.0},
    # 000 sec 9 (eqs 25-27), Figs 7-8: finite-NTK relative errors.
    "flexformer.ntk_local": {"positive_control.ntk_rel_err": 5.572e-3, "longer_run.ntk_rel_err": 1.906e-2},
    "gp.ntk_local": {"gp.ntk_rel_err": 6.829e-4, "gp.heldout_posterior_mean_mse": 7.309},
    # 003 TL;DR, "Key numbers": AEP on non-conservative attention (toy naive 0.30 -> AEP 0.9975;
    # CET attention params 0.75 -> 1.0), its cost (1.44x plain EP).
    "aep.exact_gradient": {"toy.cos_uncorrected": 0.30, "toy.cos_aep": 0.9975,
                           "attention.cos_uncorrected": 0.75, "attention.cos_aep": 1.0},
    # 003 2026-06-17 round 2: at the plateau checkpoint, frozen AEP -0.045, tracking AEP 0.997.
    "aep.tracking": {"far.cos_frozen": -0.045, "far.cos_tracking": 0.997},
    # 003 TL;DR 1: FA output projection ~1.0, attention Q/K/V ~0.25, FFN fc ~ -0.01; EP/AEP >= 0.99.
    "fa.upstream_failure": {"fa.cos_out": 1.0, "fa.cos_qkv": 0.25, "fa.cos_ffn_fc": -0.01,
                            "aep.cos_min": 0.99},
    # 003 "Key numbers": CET EP-vs-BPTT gradient cosine 0.99 (global), attention WQ/WK 0.98.
    "ep.matches_implicit_gradient": {"cet.cos_global": 0.99, "cet.cos_attention": 0.98},
    # 001 sec 4.3 (decoder), Table 4 (Flexformer enc+dec), Table 5 (PDE).
    "eb.heldout": {
        "flexformer.eb_upper": 1.7710e-1,
        "encdec_flexformer.eb_upper": 1.7511e-1,
        "pde.eb_upper": 8.4150e-2,
    },
}

CLAIMS: dict[str, Claim] = {}
for _c in _CLAIMS + _CORRECTED:
    if _c.corrects is not None and _c.corrects not in CLAIMS:
        raise RuntimeError(f"claim {_c.id} corrects {_c.corrects!r}, which is not registered before it")
    if _c.id in CLAIMS:
        raise RuntimeError(f"claim id registered twice: {_c.id}")
    if _c.expected not in STATUSES:
        raise RuntimeError(f"claim {_c.id}: unknown expected verdict {_c.expected!r}")
    CLAIMS[_c.id] = Claim(**{**_c.__dict__, "seed_values": SEED_VALUES.get(_c.id, {})})
del _c


class UnknownClaimError(KeyError):
    """An id or prefix that names no registered claim."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
        return str(self.args[0])


def get(claim_id: str) -> Claim:
    try:
        return CLAIMS[claim_id]
    except KeyError:
        raise UnknownClaimError(
            f"unknown claim id {claim_id!r}; registered ids are listed in certify/registry.py"
        ) from None


def select(patterns: list[str] | None) -> list[Claim]:
    """Claims matching ids or prefixes (`richardson`, `eb.`), in registry order.

    A pattern that matches nothing is an error: a misspelt --only must not
    quietly certify nothing.
    """
    if not patterns:
        return list(CLAIMS.values())
    chosen: dict[str, Claim] = {}
    for pat in patterns:
        hits = [c for c in CLAIMS.values() if matches(c.id, pat)]
        if not hits:
            raise UnknownClaimError(f"--only {pat!r} matches no registered claim id or prefix")
        chosen.update((c.id, c) for c in hits)
    return [c for c in CLAIMS.values() if c.id in chosen]


def matches(claim_id: str, pattern: str) -> bool:
    pattern = pattern.rstrip(".")
    return claim_id == pattern or claim_id.startswith(pattern + ".")
