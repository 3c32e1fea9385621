"""The fixture figure: drawn from a fixture, with the alignment check's numbers."""

from __future__ import annotations

import numpy as np

from nnfit.cli import main
from nnfit.ptycho import alignment_residuals, generate_fixture, read_npz, write_npz
from nnfit.ptycho.plots import fixture_figure


def test_figure_of_a_fixture_shows_each_pattern_at_its_own_coordinates(tmp_path, small_data):
    write_npz(tmp_path / "src.npz", small_data, compress=False)
    fx = generate_fixture(tmp_path / "src.npz", tmp_path / "fx.npz", n_subset=20,
                          subset_strategy="stratified").path  # fmt: skip
    arrays = read_npz(fx)
    drawn = fixture_figure(arrays, tmp_path / "fig" / "fx.png", title="fx.npz")
    png = drawn["path"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    assert drawn["n_scans"] == 20
    r = alignment_residuals(
        arrays["diffraction"], arrays["probeGuess"], arrays["objectGuess"],
        arrays["xcoords"], arrays["ycoords"], fit_scale=True,
    )  # fmt: skip
    np.testing.assert_array_equal(drawn["own"], np.diag(r))
    assert np.all(drawn["own"] * 10 < drawn["other"])
    assert [p.name for p in (tmp_path / "fig").iterdir()] == ["fx.png"]  # no temporaries


def test_verify_draws_the_figure_it_is_asked_for(tmp_path, small_data, capsys):
    write_npz(tmp_path / "src.npz", small_data, compress=False)
    fx = generate_fixture(tmp_path / "src.npz", tmp_path / "fx.npz", n_subset=16).path
    assert main(["ptycho", "verify", str(fx), "--figure", str(tmp_path / "fx.png")]) == 0
    assert f"figure   {tmp_path / 'fx.png'}" in capsys.readouterr().out
    assert (tmp_path / "fx.png").read_bytes()[:4] == b"\x89PNG"
