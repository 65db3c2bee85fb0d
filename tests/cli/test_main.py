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
