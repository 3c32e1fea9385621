"""``output_folder``: the run lock of an output folder, and what a killed run left in it."""

from __future__ import annotations

from nnfit.io.lock import output_folder


def test_output_folder_removes_leftovers_of_its_outputs_once_locked(tmp_path):
    out = tmp_path / "res"
    out.mkdir()
    left = out / ".spikes.npy.0123456789abcdef.tmp.npy"  # SIGKILL during an atomic write
    kept = [out / ".other.npy.0123456789abcdef.tmp", out / "spikes.npy"]
    for p in (left, *kept):
        p.write_bytes(b"x")
    with output_folder(out, outputs=("spikes.npy", "summary.csv")) as folder:
        assert folder == out and not left.exists()
        assert all(p.exists() for p in kept) and (out / ".nnfit-run.lock").exists()
    with output_folder(out):  # without outputs nothing is touched
        assert all(p.exists() for p in kept)
