"""What a command shows when an exception ends it: the one place `p3d` (p3d/cli.py) and the
trainer's entry (trainer/run.py) turn errors into messages and exit codes.

An error in what the user gave (a path, a file's content, a setting) is one line on stderr,
`error: <what and where>`, and exit status 2; the traceback follows only under `-v`. By the project's
convention (STYLE: "ValueError for bad input") that is every ValueError, which covers the project's
own errors (schemas.errors.SchemaError, SceneReadError, StageInputError, ...) and pydantic's, plus
a missing or unreadable file, YAML that does not parse and a tar that does not read. Any other
exception is a bug in p3d: its traceback is always printed, then a line saying so, exit status 1.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable

EXIT_INPUT = 2  # the user's input or setting is wrong; nothing was written
EXIT_BUG = 1  # an unexpected exception, or an OSError of the machine (disk full)

# OSErrors that mean "the path you gave": any other OSError is the machine's (disk full, I/O error)
_PATH_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, FileExistsError)


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def input_error(exc: BaseException) -> tuple[int, str] | None:
    """(exit code, the line to print) for an error that is not a bug; None for a bug."""
    import tarfile

    from pydantic import ValidationError

    if isinstance(exc, ValidationError):  # a ValueError too, but its own text spans many lines
        from schemas.errors import describe

        return EXIT_INPUT, one_line(describe(exc, exc.title))
    if isinstance(exc, _PATH_ERRORS):
        return EXIT_INPUT, one_line(f"{exc.filename}: {exc.strerror}" if exc.filename else exc)
    if isinstance(exc, OSError):
        return EXIT_BUG, one_line(f"{exc.filename}: {exc.strerror}" if exc.filename else exc)
    if isinstance(exc, tarfile.TarError):
        return EXIT_INPUT, one_line(f"unreadable tar file: {exc}")
    if isinstance(exc, ValueError):
        return EXIT_INPUT, one_line(exc)
    yaml_line = _yaml_error(exc)
    if yaml_line is not None:
        return EXIT_INPUT, yaml_line
    return None


def _yaml_error(exc: BaseException) -> str | None:
    if "yaml" not in sys.modules:  # no YAML was read, so this is not a YAML error
        return None
    import yaml

    if not isinstance(exc, yaml.YAMLError):
        return None
    mark = getattr(exc, "problem_mark", None)
    where = f"{mark.name}:{mark.line + 1}: " if mark is not None else ""
    return one_line(f"{where}invalid YAML: {getattr(exc, 'problem', None) or exc}")


def report(exc: BaseException, verbose: bool, echo: Callable[[str], None] | None = None) -> int:
    """Print what the user should see for `exc` (on stderr, or through `echo`) and return the exit
    code. The traceback is printed for a bug, and for any error under `verbose`."""
    echo = echo or (lambda line: print(line, file=sys.stderr))
    known = input_error(exc)
    if known is None or verbose:
        echo("".join(traceback.format_exception(exc)).rstrip())
    if known is None:
        echo(f"error: unexpected {type(exc).__name__}: {one_line(exc)} (a bug in p3d, not in your input: "
             "the traceback above says where; please report it with that traceback)")
        return EXIT_BUG
    code, line = known
    echo(f"error: {line}")
    return code
