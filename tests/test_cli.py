import pytest

from nnfit import __version__
from nnfit.cli import build_parser


def test_version_and_help(run_cli):
    out = run_cli("--version", check=True)
    assert out.stdout.strip() == f"nnfit {__version__}"
    helptext = run_cli("--help", check=True).stdout
    for group in ("calcium", "cube", "fixture", "demo"):
        assert group in helptext


@pytest.mark.parametrize("group", ["calcium", "cube", "fixture"])
def test_every_group_has_help(group):
    parser = build_parser()
    with pytest.raises(SystemExit) as exc:
        parser.parse_args([group, "--help"])
    assert exc.value.code == 0


def test_missing_group_is_an_error(run_cli):
    proc = run_cli()
    assert proc.returncode == 2
    assert "required" in proc.stderr
