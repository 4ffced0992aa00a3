"""gunicorn settings that are safe for torch; read by the Procfile's `gunicorn app:app --config gunicorn.conf.py`."""

import os

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
# Each worker loads its own copy of the model: on a 512 MB dyno keep WEB_CONCURRENCY=1.
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
worker_class = "sync"  # inference is CPU-bound: one request per worker at a time
# No preload: the model must be loaded (and torch initialised) in each worker after the fork,
# otherwise torch's thread pools are forked half-initialised and the workers hang.
preload_app = False
# Heroku's router gives up after 30 s; fail a stuck request before that so the worker is replaced.
timeout = 25
graceful_timeout = 20
keepalive = 5
accesslog = "-"
errorlog = "-"
forwarded_allow_ips = "*"  # behind Heroku's router
