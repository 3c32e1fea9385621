"""``nnfit spectral fit --degree/--mdegree`` reaches fit_cube's continuum and reports chi^2/dof."""

import json

import pytest


@pytest.mark.slow
def test_cli_fit_with_polynomials(small_store, run_cli, tmp_path):
    r = run_cli("cube", "fit", small_store, "--method", "gram", "--degree", "2", "--mdegree",
                "1", "--stats", tmp_path / "s.json", "--quiet", check=True)  # fmt: skip
    assert "chi2/dof" in r.stdout
    st = json.loads((tmp_path / "s.json").read_text())
    assert st["degree"] == 2 and st["mdegree"] == 1 and st["continuum_rounds"] >= 1
    assert st["dof"] > 0 and st["chi2_dof"] == pytest.approx(st["chi2"] / st["dof"])
