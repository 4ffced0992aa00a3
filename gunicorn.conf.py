"""gunicorn settings for a crowd of phones on one small dyno; read by the Procfile's
`bin/web app:app --config gunicorn.conf.py` (which runs this file first, to check the settings, then gunicorn).
The README's "Serving" section says why each one is what it is."""

import os
import sys


def _whole_number(name: str, default: int, low: int, high: int) -> int:
    """A setting from the environment, or one line on stderr and exit status 3 (gunicorn's "do not respawn")."""
    raw = os.environ.get(name, "").strip() or str(default)
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        print(f"Cannot start the mask classifier: {name} must be a whole number from {low} to {high}, got {raw!r}",
              file=sys.stderr)
        raise SystemExit(3)
    return value


bind = f"0.0.0.0:{_whole_number('PORT', 8000, 1, 65535)}"
# Each worker loads its own copy of the model: on a 512 MB dyno keep WEB_CONCURRENCY=1.
workers = _whole_number("WEB_CONCURRENCY", 1, 1, 16)
# Threads per worker: a connection holds one while its request arrives (a phone on conference Wi-Fi can take
# 20 s to send a photo) and while it waits for the model. Decoding and classifying are limited separately
# (INFERENCE_SLOTS), so threads cost little CPU; each holds at most one upload (MAX_UPLOAD_MB) in memory.
threads = _whole_number("GUNICORN_THREADS", 32, 1, 256)
# gthread, with a deadline on every read (maskclassifier/web/worker.py): a slow or stalled client holds one
# thread for at most UPLOAD_TIMEOUT seconds instead of the whole worker, and the arbiter's heartbeat comes from the
# worker's main loop, so a long request never gets the worker killed.
worker_class = "maskclassifier.web.worker.DeadlineThreadWorker"
# No preload: the model must be loaded (and torch initialised) in each worker after the fork,
# otherwise torch's thread pools are forked half-initialised and the workers hang.
preload_app = False
# With gthread this only fires when a worker's main loop stops (a real hang): requests are bounded by the app.
timeout = 30
graceful_timeout = 20
keepalive = 5  # idle connections (and ones that never send a byte) are closed after this many seconds
accesslog = "-"
errorlog = "-"
forwarded_allow_ips = "*"  # behind Heroku's router
