"""Entry point: `gunicorn app:app` (the Procfile and `make run` start it through bin/web and gunicorn.conf.py), or
`python app.py` for Flask's development server, without gunicorn's worker, deadlines or worker count."""

import importlib.util
import sys

# Started with a Python that lacks the requirements (e.g. the system's, outside .venv), the imports below would end
# in a traceback about some module deep inside; say in one line what is missing and how to run it instead.
_MISSING = [name for name in ("flask", "PIL", "numpy") if importlib.util.find_spec(name) is None]
if _MISSING:
    print(f"Cannot start the mask classifier: this Python ({sys.executable}) lacks {', '.join(_MISSING)}. "
          "Run `make run`, which installs the requirements into .venv and starts the app, or use .venv/bin/python.",
          file=sys.stderr)
    sys.exit(1)

from maskclassifier.core.errors import ConfigError, ModelLoadError  # noqa: E402 (after the check above)
from maskclassifier.web import create_app  # noqa: E402

# gunicorn treats a worker that exits with status 3 as "failed to boot" and stops, instead of respawning it forever.
WORKER_BOOT_ERROR = 3

try:
    app = create_app()
except (ConfigError, ModelLoadError) as error:
    print(f"Cannot start the mask classifier: {error}", file=sys.stderr)
    sys.exit(WORKER_BOOT_ERROR)

if __name__ == "__main__":
    app.run(host="127.0.0.1", port=app.config["SETTINGS"].port)
