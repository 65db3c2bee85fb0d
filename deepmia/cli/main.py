"""Entry point of the ``deepmia`` command.

Exit status, one rule for every command: 0 all done, 1 some inputs failed (each listed with its reason), 2 nothing
done or bad usage. Errors deepmia raises for bad input print on one line (``error: FILE: problem (fix)``) and exit
with status 2; ``--debug``, anywhere on the command line, shows the traceback instead.
"""

from __future__ import annotations

import sys

import typer
from typer._click import exceptions as click_exceptions

from deepmia.errors import DeepmiaError

HELP = (
    "Deep-learning medical image analysis: read, process, learn, evaluate, explain, deliver.\n\n"
    "Exit status of every command: 0 all done; 1 some inputs failed (each listed with its reason); "
    "2 nothing done (bad file, empty folder, wrong kind of model) or bad usage. "
    "--debug (anywhere on the command line) shows tracebacks."
)

app = typer.Typer(
    name="deepmia",
    help=HELP,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _print_version(value: bool) -> None:
    if value:
        from deepmia import __version__

        print(f"deepmia {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors (anywhere on the line)."),
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    # No docstring: the app's HELP is the text of `deepmia --help`.
    pass


def _add_commands() -> None:
    # Command modules are a fixed list (no import-by-path from configuration).
    from deepmia.cli import (
        batch,
        catalog,
        compress,
        dataset,
        deid,
        demo,
        explain,
        export,
        imaging,
        learn,
        models,
        pacs,
        process,
        quality,
        report_cmd,
        serve,
    )

    imaging.add_commands(app)
    deid.add_commands(app)
    dataset.add_commands(app)
    catalog.add_commands(app)
    demo.add_commands(app)
    process.add_commands(app)
    quality.add_commands(app)
    learn.add_commands(app)
    models.add_commands(app)
    explain.add_commands(app)
    report_cmd.add_commands(app)
    export.add_commands(app)
    pacs.add_commands(app)
    batch.add_commands(app)
    serve.add_commands(app)
    compress.add_commands(app)


_add_commands()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    end = args.index("--") if "--" in args else len(args)  # after "--" every word is an argument
    debug = "--debug" in args[:end]
    # --debug is a plain flag anywhere on the line: taken out here, so no (sub)command has to declare it.
    args = [a for a in args[:end] if a != "--debug"] + args[end:]
    from deepmia._warnings import ignore_library_warnings

    ignore_library_warnings()  # library warnings that say nothing to a user, filtered narrowly (see the module)
    try:
        # With standalone_mode=False click returns the code of a typer.Exit instead of raising it.
        code = app(args=args, prog_name="deepmia", standalone_mode=False)
    except DeepmiaError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except typer.Exit as exc:
        return exc.exit_code
    except click_exceptions.ClickException as exc:
        exc.show()
        return exc.exit_code
    except typer.Abort:
        print("aborted", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return code if isinstance(code, int) else 0


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())
