import typer

from deepmia.cli import main as cli_main


def test_exit_code_of_typer_exit_is_returned(monkeypatch):
    @cli_main.app.command("_exit_test", hidden=True)
    def _exit_test(code: int = 3) -> None:
        raise typer.Exit(code)

    assert cli_main.main(["_exit_test", "--code", "3"]) == 3
    assert cli_main.main(["_exit_test", "--code", "0"]) == 0


def test_unknown_command_is_a_usage_error(capsys):
    assert cli_main.main(["no-such-command"]) == 2
    assert "no-such-command" in capsys.readouterr().err


def test_version(capsys):
    from deepmia import __version__

    assert cli_main.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"deepmia {__version__}"


def test_debug_is_a_plain_flag_anywhere_on_the_line(tmp_path, capsys):
    import pytest

    from deepmia.errors import CorruptFileError

    bad = tmp_path / "bad.png"
    bad.write_text("not a picture")
    assert cli_main.main(["info", str(bad)]) == 2
    for args in (["--debug", "info", str(bad)], ["info", "--debug", str(bad)], ["info", str(bad), "--debug"]):
        with pytest.raises(CorruptFileError):  # the traceback, not the one-line error
            cli_main.main(args)


def test_help_states_the_exit_rule_and_the_catalog_default_database(capsys):
    assert cli_main.main(["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "0 all done; 1 some inputs failed" in text and "2 nothing done" in text
    for args in (["catalog", "--help"], ["catalog", "scan", "--help"], ["catalog", "list", "--help"]):
        assert cli_main.main(args) == 0
        text = " ".join(capsys.readouterr().out.replace("│", " ").split())
        assert "(default: deepmia-catalog.sqlite in the current folder)" in text, args
