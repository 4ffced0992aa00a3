"""What the command-line tools share (maskclassifier/cli.py)."""

from __future__ import annotations

import warnings

from maskclassifier.cli import silence_fastai_jit_warning

TORCH_MESSAGE = "`torch.jit.script` is deprecated. Please switch to `torch.compile` or `torch.export`."


def test_only_the_jit_script_deprecation_is_silenced():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # pytest.ini hides FutureWarnings; here every warning must be seen
        silence_fastai_jit_warning()
        warnings.warn(TORCH_MESSAGE, FutureWarning)
        warnings.warn("`torch.foo` is deprecated", FutureWarning)
        warnings.warn(TORCH_MESSAGE, UserWarning)  # same words, another category: not the one fastai causes
    assert [(str(warning.message), warning.category) for warning in caught] == [
        ("`torch.foo` is deprecated", FutureWarning), (TORCH_MESSAGE, UserWarning)]

