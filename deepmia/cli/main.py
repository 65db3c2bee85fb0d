"""Entry point of the ``deepmia`` command.

Errors deepmia raises for bad input print on one line (``error: FILE: problem (fix)``) and exit with status 2;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import sys

import typer
from typer._click import exceptions as click_exceptions

from deepmia.errors import DeepmiaError

app = typer.Typer(
    name="deepmia",
    help="Deep-learning medical image analysis: read, process, learn, evaluate, explain, deliver.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    """Deepmia command line."""


def _register() -> None:
    # Command modules are a fixed list (no import-by-path from configuration).
    from deepmia.cli import catalog, dataset, deid, demo, explain, imaging, learn, process, quality

    imaging.register(app)
    deid.register(app)
    dataset.register(app)
    catalog.register(app)
    demo.register(app)
    process.register(app)
    quality.register(app)
    learn.register(app)
    explain.register(app)


_register()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
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
