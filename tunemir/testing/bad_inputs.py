"""The bad-input table's harness: one case is a command line, the files it meets, and what a user must read.

Each `tests/test_bad_inputs_<area>.py` holds a list of `BadInput` cases and runs them through
`check_bad_input`. A case passes when the command exits with its exit code (never a traceback:
click's runner must not have caught a Python exception) and its output names every string in
`mentions` (the file or option at fault and the fix).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from click.testing import CliRunner

__all__ = ["BadInput", "check_bad_input"]


@dataclass(frozen=True)
class BadInput:
    """One bad or odd input.

    `args`: the `tunemir` arguments; `{tmp}` in any of them becomes the case's own folder.
    `setup(tmp)`: writes the files the case needs before the command runs (and may return a
    dict of extra `{name}` substitutions for `args` and `mentions`).
    `mentions`: strings the output must contain (case-insensitive), after the same substitution.
    `exit_code`: 2 for a usage error (click's), 1 for a failure of the input itself.
    """

    id: str
    args: tuple[str, ...]
    mentions: tuple[str, ...]
    exit_code: int = 2
    setup: Callable[[Path], dict | None] | None = None
    env: dict[str, str] = field(default_factory=dict)
    umask: int | None = None


def check_bad_input(case: BadInput, tmp: Path) -> str:
    """Run `case` in `tmp`; assert a clean exit with the expected code and mentions. Returns the output."""
    from tunemir.cli import main  # imported here so a test module's collection stays cheap

    subs = {"tmp": str(tmp)}
    if case.setup is not None:
        subs.update(case.setup(tmp) or {})
    args = [_fill(a, subs) for a in case.args]
    old_umask = os.umask(case.umask) if case.umask is not None else None
    try:
        env = {k: _fill(v, subs) for k, v in case.env.items()}  # `{tmp}` etc. work in values too
        result = CliRunner().invoke(main, args, env=env or None, catch_exceptions=True)
    finally:
        if old_umask is not None:
            os.umask(old_umask)
    output = result.output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        tb = "".join(traceback.format_exception(result.exception))
        raise AssertionError(f"{case.id}: traceback instead of an error message\n{output}\n{tb}")
    assert "Traceback (most recent call last)" not in output, f"{case.id}: traceback in output\n{output}"
    assert result.exit_code == case.exit_code, (
        f"{case.id}: exit {result.exit_code}, expected {case.exit_code}\n{output}")
    for wanted in case.mentions:
        wanted = _fill(wanted, subs)
        assert wanted.lower() in output.lower(), f"{case.id}: output does not mention {wanted!r}\n{output}"
    return output


def _fill(text: str, subs: dict) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: str(subs.get(m.group(1), m.group(0))), text)
