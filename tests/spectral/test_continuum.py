"""Continuum polynomials against brute-force dense solutions."""

import numpy as np
import pytest
from scipy.optimize import lsq_linear, minimize

from nnfit.spectral.continuum import legendre_basis, mpoly_step
from nnfit.spectral.cube_operator import CubeOperator
from nnfit.spectral.fit import fit_cube


def _problem(S=3, P=4, C=2, seed=0, mask_every=7):
    rng = np.random.default_rng(seed)
    T = 400
    tem = np.log(5000.0) + 1e-4 * np.arange(T)
    t = np.arange(T)
    templates = np.array(
        [2 + np.sin(2 * np.pi * t / rng.uniform(8, 40)) * rng.uniform(0.2, 0.6) for _ in range(P)]
    )
    vel = np.linspace(-150.0, 150.0, 7)
    losvd = rng.random((S, vel.size, C))
    obs = tem[100:300] + 0.3e-4
    L = obs.size
    mask = np.ones(L, bool)
    mask[::mask_every] = False
    noise = 0.02 * rng.uniform(0.5, 1.5, (S, L))
    base = CubeOperator(templates, losvd, vel, tem, obs, kernel="fourier")
    x_true = rng.uniform(0, 1, (C, P))
    xl = np.linspace(-1, 1, L)
    y = base.forward(x_true) * (1 + 0.1 * xl) + 0.5 * xl**2 + noise * rng.standard_normal((S, L))
    args = (templates, losvd, vel, tem, obs)
    kw = dict(kernel="fourier", mask=mask, noise=noise, datacube=y)
    return args, kw, base, y, mask, noise


@pytest.mark.parametrize("method", ["gram", "active-set"])
def test_additive_polynomials_are_eliminated_exactly(method):
    args, kw, base, y, mask, noise = _problem()
    degree = 3
    op = CubeOperator(*args, **kw)
    x, st = fit_cube(op, method=method, tol=1e-10, degree=degree)
    # dense brute force: [W A, blockdiag(W P)] with bounds x >= 0, a free
    C, P = op.model_shape
    S, L = y.shape
    A = np.stack([base.forward(np.eye(C * P)[j].reshape(C, P)) for j in range(C * P)], -1)
    Pl = legendre_basis(L, degree)
    w = mask[None, :] / noise
    rows, rhs = [], []
    for s in range(S):
        block = np.zeros((L, C * P + S * (degree + 1)))
        block[:, : C * P] = A[s]
        block[:, C * P + s * (degree + 1) : C * P + (s + 1) * (degree + 1)] = Pl
        rows.append(block * w[s][:, None])
        rhs.append(y[s] * w[s])
    M, b = np.vstack(rows), np.concatenate(rhs)
    lb = np.r_[np.zeros(C * P), np.full(S * (degree + 1), -np.inf)]
    ref = lsq_linear(M, b, bounds=(lb, np.inf), tol=1e-14, lsmr_tol="auto", max_iter=10000)
    chi2_ref = float(np.sum((M @ ref.x - b) ** 2))
    assert st["chi2"] == pytest.approx(chi2_ref, rel=1e-8)
    assert np.allclose(x.ravel(), ref.x[: C * P], atol=1e-6 * np.abs(ref.x).max())
    assert st["apoly"].shape == (S, L) and st["dof"] == mask.sum() * S - st["nnz"] - S * 4


def test_multiplicative_polynomials_reach_the_joint_minimum():
    args, kw, base, y, mask, noise = _problem(S=1, seed=2)
    degree, mdegree = 1, 3
    op = CubeOperator(*args, **kw)
    _, st = fit_cube(
        op, method="gram", tol=1e-10, degree=degree, mdegree=mdegree, continuum_tol=1e-12
    )
    h = np.asarray(st["chi2_history"])
    assert np.all(np.diff(h) <= 1e-12 * h[0])
    assert st["kkt_violation"] <= 1e-8 and st["continuum_converged"]
    # brute force: minimise over the mpoly coefficients with an inner bounded least squares
    C, P = op.model_shape
    L = y.shape[1]
    A = np.stack([base.forward(np.eye(C * P)[j].reshape(C, P))[0] for j in range(C * P)], -1)
    Pm = legendre_basis(L, mdegree)[:, 1:]
    Pa = legendre_basis(L, degree)
    w = mask / noise[0]

    def inner(c):
        m = 1 + Pm @ c
        M = np.hstack([A * m[:, None], Pa]) * w[:, None]
        lb = np.r_[np.zeros(C * P), np.full(degree + 1, -np.inf)]
        r = lsq_linear(M, y[0] * w, bounds=(lb, np.inf), tol=1e-14, lsmr_tol="auto")
        return float(np.sum((M @ r.x - y[0] * w) ** 2))

    best = minimize(
        inner,
        np.zeros(mdegree),
        method="Nelder-Mead",
        options={"xatol": 1e-9, "fatol": 1e-12, "maxiter": 4000},
    )
    assert st["chi2"] <= best.fun * (1 + 1e-6)
    assert st["chi2"] == pytest.approx(best.fun, rel=1e-5)


def test_mpoly_step_is_exact_least_squares():
    rng = np.random.default_rng(1)
    L = 80
    u = rng.uniform(1, 2, (2, L))
    xl = np.linspace(-1, 1, L)
    y = u * (1 + 0.2 * xl - 0.1 * (1.5 * xl**2 - 0.5)) + 0.3 - 0.05 * xl
    coef, apoly, chi2 = mpoly_step(u, y, np.ones((2, L)), 1, 2)
    assert np.allclose(coef, [[0.2, -0.1]] * 2) and chi2 < 1e-20
    assert np.allclose(apoly, 0.3 - 0.05 * xl)


@pytest.mark.filterwarnings("ignore:chi\\^2/dof")  # the data has an mpoly this fit lacks
def test_matrix_free_sees_the_continuum():
    args, kw, *_ = _problem(seed=4)
    op = CubeOperator(*args, **kw)
    _, st_g = fit_cube(op, method="gram", tol=1e-10, degree=2)
    op = CubeOperator(*args, **kw)
    _, st_m = fit_cube(op, method="matrix-free", degree=2, max_iter=3000)
    assert st_m["chi2"] == pytest.approx(st_g["chi2"], rel=1e-3)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:chi\\^2/dof")  # simulated noise-free-ish data, any chi2
def test_dask_cluster_gives_the_same_continuum_fit(tmp_path):
    from dask.distributed import Client, LocalCluster

    from nnfit.spectral.simulate import simulate_cube

    path = simulate_cube(6, 2, 4, seed=7).to_h5(tmp_path / "c.h5")
    kw = dict(method="gram", x0=None, checkpoint=False, block_size=2, degree=2, mdegree=2)
    x_local, st_local = fit_cube(path, **kw)
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as lc,
        Client(lc) as client,
    ):
        x_dask, st_dask = fit_cube(path, scheduler=client, **kw)
    assert np.abs(x_dask - x_local).max() <= 1e-10 * np.abs(x_local).max()
    assert st_dask["chi2"] == pytest.approx(st_local["chi2"], rel=1e-10)
