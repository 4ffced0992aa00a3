"""What the command-line tools (train, evaluate, export_onnx) share: warning hygiene.

Imports nothing heavy, so the slim install's `evaluate` can use it.
"""

from __future__ import annotations

import warnings

# fastai decorates a few functions with torch.jit.script when it is imported; torch 2.14 deprecates that with a
# FutureWarning on every command. It is fastai's to fix and says nothing about the user's run.
JIT_SCRIPT_DEPRECATION = r"`?torch\.jit\.script`? is deprecated"


def silence_fastai_jit_warning() -> None:
    """Hide exactly torch's "torch.jit.script is deprecated" FutureWarning; every other warning still shows.

    Call it before fastai is imported: fastai triggers the warning at import time."""
    warnings.filterwarnings("ignore", message=JIT_SCRIPT_DEPRECATION, category=FutureWarning)

