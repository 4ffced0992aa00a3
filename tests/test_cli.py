"""What the command-line tools share (maskclassifier/core/cli.py) and the install instructions they start from."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

from maskclassifier.core.cli import ArgsFileParser, silence_fastai_jit_warning

ROOT = Path(__file__).resolve().parent.parent
TORCH_MESSAGE = "`torch.jit.script` is deprecated. Please switch to `torch.compile` or `torch.export`."


def test_only_the_jit_script_deprecation_is_silenced():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # pytest.ini hides FutureWarnings; here every warning must be seen
        silence_fastai_jit_warning()
        warnings.warn(TORCH_MESSAGE, FutureWarning, stacklevel=1)
        warnings.warn("`torch.foo` is deprecated", FutureWarning, stacklevel=1)
        # same words, another category: not the one fastai causes
        warnings.warn(TORCH_MESSAGE, UserWarning, stacklevel=1)
    assert [(str(warning.message), warning.category) for warning in caught] == [
        ("`torch.foo` is deprecated", FutureWarning), (TORCH_MESSAGE, UserWarning)]


def test_argument_files_take_several_options_a_line_and_comments(tmp_path):
    parser = ArgsFileParser(prog="test")
    parser.add_argument("--size", type=int)
    parser.add_argument("--name")
    parser.add_argument("--flag", action="store_true")
    options = tmp_path / "run.args"
    options.write_text("--size 224 --flag  # why 224\n# a whole-line comment\n--name 'two words'\n")
    args = parser.parse_args([f"@{options}"])
    assert (args.size, args.name, args.flag) == (224, "two words", True)


def test_quick_start_says_what_the_install_downloads_and_shows_it():
    readme = (ROOT / "README.md").read_text()
    quick_start = readme[readme.index("## Quick start"):]
    quick_start = quick_start[:quick_start.index("\n## ", 1)]
    assert "6.4 GB" in quick_start and re.search(r"about 7\s+minutes", quick_start)
    assert "PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu make" in quick_start
    pip_lines = [line for line in (ROOT / "Makefile").read_text().splitlines() if re.search(r"\bpip install\b", line)
                 and not line.startswith("#")]
    # three for the full install (make install), one for the slim one (make install-slim)
    assert len(pip_lines) == 4 and not any("--quiet" in line or " -q" in line for line in pip_lines)
