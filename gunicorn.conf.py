"""gunicorn settings for a crowd of phones on one small dyno; read by the Procfile's
`bin/web app:app --config gunicorn.conf.py` (which runs this file first, to check the settings, then gunicorn).
The README's "Serving" section says why each one is what it is."""

import importlib.util
import ipaddress
import os
import sys

# bin/web runs this file by its path (so sys.path[0] is bin/), and Heroku does not pip-install the project: the
# package beside this file is put within reach for the one rule of which proxies to believe.
_ROOT = os.path.dirname(os.path.abspath(__file__))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from maskclassifier.core.capacity import (  # noqa: E402  (a leaf module: the standard library only)
    WORKER_BUDGET_MB,
    trusted_proxies,
)


def _fail(message: str) -> None:
    """One line on stderr and exit status 3 (gunicorn's "do not respawn")."""
    print(f"Cannot start the mask classifier: {message}", file=sys.stderr)
    raise SystemExit(3)


def _whole_number(name: str, default: int, low: int, high: int) -> int:
    """A setting from the environment, or one line on stderr and exit status 3."""
    raw = os.environ.get(name, "").strip() or str(default)
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        _fail(f"{name} must be a whole number from {low} to {high}, got {raw!r}")
    return value


def _host() -> str:
    raw = os.environ.get("HOST", "").strip() or "0.0.0.0"
    try:
        return str(ipaddress.ip_address(raw))
    except ValueError:
        _fail(f"HOST must be an IP address to listen on (0.0.0.0: every interface, 127.0.0.1: this machine only), "
              f"got {raw!r}")


# Every interface by default: Heroku's router reaches the dyno on it. `make run` listens on 127.0.0.1 only.
_HOST = _host()
_PORT = _whole_number("PORT", 8000, 1, 65535)
bind = f"[{_HOST}]:{_PORT}" if ":" in _HOST else f"{_HOST}:{_PORT}"  # an IPv6 address is bound in brackets

# What one worker needs at its peak (its model, the libraries and two photos in flight; measured:
# maskclassifier/core/capacity.py's WORKER_BUDGET_MB), and gunicorn's master (preload_app is off: it never loads
# the app).
SLIM_WORKER_MB = WORKER_BUDGET_MB["slim"]  # an .onnx model: ONNX Runtime, Pillow and NumPy
FULL_WORKER_MB = WORKER_BUDGET_MB["full"]  # a fastai .pkl: CPU torch and fastai
MASTER_MB = 30
# cgroup v2, then v1 (Heroku's dynos have the v1 file). Without a limit v1 reads as about 8 EiB: anything over
# 1 TiB is taken for "no limit", as Heroku's Python buildpack takes it when it picks its WEB_CONCURRENCY.
_CGROUP_LIMIT_FILES = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")
_NO_LIMIT_MB = 1 << 20


def _memory_limit() -> tuple[int | None, str]:
    """The memory this container may use, in MB (None: no limit known), and where that figure came from."""
    raw = os.environ.get("MEMORY_LIMIT_MB", "").strip()
    if raw:
        if raw.lower() == "max":
            return None, "MEMORY_LIMIT_MB"
        if not raw.isdigit() or not 64 <= int(raw) <= _NO_LIMIT_MB:
            _fail(f"MEMORY_LIMIT_MB must be a whole number from 64 to {_NO_LIMIT_MB} (MB), or max for no limit, "
                  f"got {raw!r}")
        return int(raw), "MEMORY_LIMIT_MB"
    for path in _CGROUP_LIMIT_FILES:
        try:
            with open(path) as file:
                content = file.read().strip()
        except OSError:
            continue
        if content.isdigit() and int(content) // (1 << 20) <= _NO_LIMIT_MB:
            return int(content) // (1 << 20), path
    return None, "no cgroup limit"


def _install() -> str:
    """"slim" when the model served is an .onnx file (ONNX Runtime), else "full" (fastai and torch). With MODEL_PATH
    unset, the model maskclassifier.core.config.default_model_path picks: the .onnx only where fastai is not installed
    and models/export.onnx exists. (config is not imported: it brings NumPy into gunicorn's master.)"""
    model_path = os.environ.get("MODEL_PATH", "").strip()
    if not model_path:
        slim = importlib.util.find_spec("fastai") is None and os.path.isfile("models/export.onnx")
        return "slim" if slim else "full"
    return "slim" if model_path.endswith(".onnx") else "full"


_INSTALL = _install()
# Lower it when a worker is known to need less (it lets more workers fit); raise it if workers outgrow it.
_WORKER_MEMORY_MB = _whole_number("WORKER_MEMORY_MB", SLIM_WORKER_MB if _INSTALL == "slim" else FULL_WORKER_MB,
                                  64, 65536)
os.environ["WORKER_MEMORY_MB"] = str(_WORKER_MEMORY_MB)  # the workers' /api/model states the budget they run under
_MEMORY_LIMIT_MB, _MEMORY_LIMIT_FROM = _memory_limit()
# Each worker loads its own copy of the model. Heroku's Python buildpack sets WEB_CONCURRENCY=2 on a 512 MB dyno
# when the app does not (256 MB a worker), and nothing tells that 2 from one the owner chose: either way, no more
# workers start than the memory holds, or the dyno swaps (R14) and the answers slow to a crawl.
_ASKED = _whole_number("WEB_CONCURRENCY", 1, 1, 16)
_FIT = None if _MEMORY_LIMIT_MB is None else (_MEMORY_LIMIT_MB - MASTER_MB) // _WORKER_MEMORY_MB
workers = _ASKED if _FIT is None else max(1, min(_ASKED, _FIT))
if workers < _ASKED:
    print(f"Mask classifier: WEB_CONCURRENCY={_ASKED} asks for {_ASKED} gunicorn workers, but {_MEMORY_LIMIT_MB} MB of "
          f"memory ({_MEMORY_LIMIT_FROM}) holds {workers} ({MASTER_MB} MB for gunicorn's master, "
          f"{_WORKER_MEMORY_MB} MB a worker serving {'an .onnx' if _INSTALL == 'slim' else 'a fastai .pkl'} model): "
          f"starting {workers}. To start more, set WORKER_MEMORY_MB lower (the MB one worker really needs), or "
          f"MEMORY_LIMIT_MB if the limit is wrong.",
          file=sys.stderr)
if _FIT == 0:  # not even one worker fits: it will swap (R14 on Heroku) and answer slowly, so say what to do
    print(f"Mask classifier: one worker serving {'an .onnx' if _INSTALL == 'slim' else 'a fastai .pkl'} model needs "
          f"about {_WORKER_MEMORY_MB} MB, but {_MEMORY_LIMIT_MB} MB of memory ({_MEMORY_LIMIT_FROM}) holds it and "
          f"gunicorn's master ({MASTER_MB} MB) only by swapping. "
          + ("Serve the model's ONNX twin instead (MODEL_PATH=models/export.onnx: the same answers in about "
             f"{SLIM_WORKER_MB} MB), or use a bigger dyno." if _INSTALL == "full" else "Use a bigger dyno."),
          file=sys.stderr)
# Threads per worker: a request holds one from the moment it has wholly arrived (the worker's front door reads it
# first, without a thread) until it is answered, mostly waiting for an inference slot (INFERENCE_SLOTS). Decoding
# and classifying are limited by the slots, so threads cost little CPU; each holds at most one upload in memory.
threads = _whole_number("GUNICORN_THREADS", 32, 1, 256)
# gthread with a front door (maskclassifier/web/worker.py, web/frontdoor.py): the main loop reads each request whole
# before a thread sees it, so a slow or idle client costs a socket, never a thread, and the arbiter's heartbeat comes
# from that loop, so a long request never gets the worker killed.
worker_class = "maskclassifier.web.worker.FrontDoorWorker"
# No preload: the model must be loaded (and torch initialised) in each worker after the fork,
# otherwise torch's thread pools are forked half-initialised and the workers hang.
preload_app = False
# With gthread this only fires when a worker's main loop stops (a real hang): requests are bounded by the app.
timeout = 30
# On a restart or deploy Heroku sends SIGTERM, then SIGKILL 30 s later: the workers get 25 s to finish the requests
# they hold (a request that has its photo is answered within QUEUE_TIMEOUT + FACE_TIME_BUDGET, 18 s by default),
# and the master the rest to stop.
graceful_timeout = 25
# Idle kept-alive connections are closed after this many seconds; they cost a socket, not a thread. Heroku's Router 2.0
# keeps its idle connections to a dyno for 90 s: closing one first races with a request the router sends on it, so on
# Heroku the dyno waits longer than the router. (A new connection must send its headers within 10 s either way.)
keepalive = 95 if os.environ.get("DYNO", "").strip() else 5
accesslog = "-"
errorlog = "-"
# Whose X-Forwarded-For and X-Forwarded-Proto gunicorn believes (and the app, for whose turn a request is): any peer
# on Heroku, where only its router reaches the dyno; elsewhere a proxy on this machine, since gunicorn may face
# clients itself; FORWARDED_ALLOW_IPS overrides both (maskclassifier.core.capacity.trusted_proxies).
try:
    forwarded_allow_ips = ",".join(trusted_proxies(os.environ))
except ValueError as error:
    _fail(str(error))
