import pytest

from nnfit.io.jsonfile import read_json_object


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"[" * 200000 + b"]" * 200000, "nested too deeply"),
        (b"{", "not valid JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[1, 2]", "must hold a JSON object; found a list"),
    ],
)
def test_bad_json_is_one_line_error_naming_the_file(tmp_path, text, message):
    p = tmp_path / "m.json"
    p.write_bytes(text)
    with pytest.raises(ValueError, match=message) as exc:
        read_json_object(p)
    assert str(p) in str(exc.value) and "\n" not in str(exc.value)
