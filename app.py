"""Entry point: `gunicorn app:app` (the Procfile and `make run` start it through bin/web and gunicorn.conf.py), or
`python app.py` for Flask's development server, without gunicorn's worker, deadlines or worker count."""

import sys

from maskclassifier.errors import ConfigError, ModelLoadError
from maskclassifier.web import create_app

# gunicorn treats a worker that exits with status 3 as "failed to boot" and stops, instead of respawning it forever.
WORKER_BOOT_ERROR = 3

try:
    app = create_app()
except (ConfigError, ModelLoadError) as error:
    print(f"Cannot start the mask classifier: {error}", file=sys.stderr)
    sys.exit(WORKER_BOOT_ERROR)

if __name__ == "__main__":
    app.run(host="127.0.0.1", port=app.config["SETTINGS"].port)
