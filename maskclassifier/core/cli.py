"""What the command-line tools (train, evaluate, export_onnx) share: argument files and warning hygiene.

Imports nothing heavy, so the slim install's `evaluate` can use it.
"""

from __future__ import annotations

import argparse
import shlex
import warnings

# fastai decorates a few functions with torch.jit.script when it is imported; torch 2.14 deprecates that with a
# FutureWarning on every command. It is fastai's to fix and says nothing about the user's run.
JIT_SCRIPT_DEPRECATION = r"`?torch\.jit\.script`? is deprecated"


def silence_fastai_jit_warning() -> None:
    """Hide exactly torch's "torch.jit.script is deprecated" FutureWarning; every other warning still shows.

    Call it before fastai is imported: fastai triggers the warning at import time."""
    warnings.filterwarnings("ignore", message=JIT_SCRIPT_DEPRECATION, category=FutureWarning)


class ArgsFileParser(argparse.ArgumentParser):
    """An ArgumentParser that also reads options from files named with `@`, e.g. `@recipes/model1.args`.

    Each line of such a file is split as a shell would split it, so a line may hold an option and its value
    (`--size 224`) or several options, and `#` starts a comment (a recipe can say why it chose a value). Options
    after the `@FILE` on the command line override the file's, as argparse takes the last value given."""

    def __init__(self, **kwargs) -> None:
        super().__init__(fromfile_prefix_chars="@", **kwargs)

    def convert_arg_line_to_args(self, arg_line: str) -> list[str]:
        try:
            return shlex.split(arg_line, comments=True)
        except ValueError as exc:  # an unclosed quote
            self.error(f"cannot read the line {arg_line.strip()!r} of an @ argument file: {exc}")
