import pytest

from nnfit.io.paths import input_files, refuse_output_over_input


def test_same_file_through_relative_path_and_symlink_is_refused(tmp_path, monkeypatch):
    src = tmp_path / "store.h5"
    src.write_bytes(b"x")
    (tmp_path / "link.h5").symlink_to(src)
    monkeypatch.chdir(tmp_path)
    for out in ("store.h5", "./store.h5", str(src), "link.h5"):
        with pytest.raises(ValueError, match=r"--out .* is an input"):
            refuse_output_over_input([out], [src])
    refuse_output_over_input(["other.png"], [src])


def test_input_files_of_folder_stem_and_file(tmp_path):
    (tmp_path / "a.npy").write_bytes(b"")
    (tmp_path / "a_metadata.json").write_bytes(b"")
    assert {p.name for p in input_files(tmp_path)} == {"a.npy", "a_metadata.json"}
    assert {p.name for p in input_files(tmp_path / "a")} == {"a.npy", "a_metadata.json"}
    assert [p.name for p in input_files(tmp_path / "a.npy")] == ["a.npy"]
    assert input_files(tmp_path / "missing" / "x") == []
