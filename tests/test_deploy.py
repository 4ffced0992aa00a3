"""The Procfile's gunicorn command, run for real on a loopback port."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import urllib.request

import pytest

from datasets import face_like_image
from harness.multipart import Part, multipart
from harness.server import free_port, procfile_web_command, serving, start_gunicorn
from helpers import ROOT, encode
from maskclassifier.core.config import Settings, default_model_path

pytestmark = pytest.mark.slow  # each test starts gunicorn or runs its config in a fresh Python


def test_procfile_command_serves_predictions(tiny_model):
    with serving(tiny_model) as served:
        body, content_type = multipart([Part("file", encode(face_like_image(["Cloth"], seed=1)), b"face.jpg")])
        request = urllib.request.Request(served.url + "/api/predict", data=body,
                                         headers={"Content-Type": content_type})
        with urllib.request.urlopen(request, timeout=20) as response:
            assert response.status == 200
            result = json.loads(response.read())
        assert len(result["probabilities"]) == 7
        assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_gunicorn_stops_instead_of_respawning_when_the_model_is_missing(tmp_path):
    process = start_gunicorn(tmp_path / "missing.pkl", free_port())
    try:
        output, _ = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("gunicorn kept running without a model")
    assert process.returncode != 0
    assert f"Cannot start the mask classifier: model file not found: {tmp_path / 'missing.pkl'}" in output


# WEB_CONCURRENCY=abc too: gunicorn parses that variable when it is imported, so the Procfile's bin/web checks the
# settings before it starts gunicorn.
@pytest.mark.parametrize("name,value", [("WEB_CONCURRENCY", "0"), ("WEB_CONCURRENCY", "17"), ("WEB_CONCURRENCY", "abc"),
                                        ("WEB_CONCURRENCY", "2.5"), ("PORT", "70000"),
                                        ("PORT", "http"), ("GUNICORN_THREADS", "-1"), ("WORKER_MEMORY_MB", "abc"),
                                        ("WORKER_MEMORY_MB", "10")])
def test_bad_gunicorn_settings_stop_it_with_one_line(tiny_model, name, value):
    process = start_gunicorn(tiny_model, free_port(), **{name: value})
    try:
        output, _ = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"gunicorn kept running with {name}={value}")
    assert process.returncode != 0
    assert f"Cannot start the mask classifier: {name} must be a whole number" in output
    assert "Traceback" not in output and len(output.strip().splitlines()) == 1, output


# gunicorn.conf.py's own settings, read from these variables only (the shell's, and Heroku's DYNO, left out).
CONFIG_VARIABLES = ("WEB_CONCURRENCY", "MEMORY_LIMIT_MB", "WORKER_MEMORY_MB", "MODEL_PATH", "DYNO",
                    "FORWARDED_ALLOW_IPS", "HOST", "PORT", "GUNICORN_THREADS")


def run_config(**environ: str) -> subprocess.CompletedProcess:
    """gunicorn.conf.py run as bin/web runs it (runpy), in a process of its own: its settings as JSON on stdout."""
    env = {name: value for name, value in os.environ.items() if name not in CONFIG_VARIABLES} | environ
    code = ("import json, runpy; s = runpy.run_path('gunicorn.conf.py'); print(json.dumps({name: s[name] for name in "
            "('workers', 'bind', 'forwarded_allow_ips', 'graceful_timeout', 'keepalive', '_INSTALL')}))")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def config(**environ: str) -> tuple[dict, str]:
    result = run_config(**environ)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), result.stderr


# 30 MB for the master, then 250 MB a slim worker, 720 MB a full one (CPU torch): 512 MB holds one slim worker;
# 1024 MB three slim ones or one full one. Heroku's buildpack sets WEB_CONCURRENCY=2 on a 512 MB dyno.
@pytest.mark.parametrize("model,limit,asked,expected", [
    ("models/export.onnx", "512", "2", 1), ("models/export.onnx", "1024", "4", 3),
    ("models/export.pkl", "1024", "2", 1), ("models/export.pkl", "2048", "4", 2),
])
def test_no_more_workers_start_than_the_memory_holds(model, limit, asked, expected):
    settings, message = config(MODEL_PATH=model, MEMORY_LIMIT_MB=limit, WEB_CONCURRENCY=asked)
    assert settings["workers"] == expected
    lines = message.strip().splitlines()
    assert len(lines) == 1, message
    assert f"WEB_CONCURRENCY={asked} asks for {asked} gunicorn workers, but {limit} MB" in lines[0]
    assert f"holds {expected}" in lines[0] and f"starting {expected}" in lines[0] and "WORKER_MEMORY_MB" in lines[0]


@pytest.mark.parametrize("model,limit,advice", [
    ("models/export.pkl", "512", "MODEL_PATH=models/export.onnx"),  # the full install on Heroku's basic dyno
    ("models/export.onnx", "256", "bigger dyno"),
])
def test_where_not_even_one_worker_fits_it_starts_one_and_says_what_to_do(model, limit, advice):
    settings, message = config(MODEL_PATH=model, MEMORY_LIMIT_MB=limit, WEB_CONCURRENCY="1")
    assert settings["workers"] == 1
    (line,) = message.strip().splitlines()
    assert f"{limit} MB of memory" in line and "only by swapping" in line and advice in line


@pytest.mark.parametrize("environ,expected", [
    ({"MEMORY_LIMIT_MB": "max", "WEB_CONCURRENCY": "3"}, 3),  # no limit known: as asked
    ({"MEMORY_LIMIT_MB": "1024", "WEB_CONCURRENCY": "2"}, 2),  # asked for no more than fit
    ({"MEMORY_LIMIT_MB": "512"}, 1),  # WEB_CONCURRENCY unset: one
    ({"MEMORY_LIMIT_MB": "512", "WEB_CONCURRENCY": "2", "WORKER_MEMORY_MB": "230"}, 2),  # a smaller budget: more fit
])
def test_workers_as_asked_when_they_fit_or_no_limit_is_known(environ, expected):
    settings, message = config(MODEL_PATH="models/export.onnx", **environ)
    assert settings["workers"] == expected and message == ""


def test_the_install_is_the_one_the_app_will_serve():
    """With MODEL_PATH unset, the budget is that of the model maskclassifier.core.config picks in this install."""
    settings, _ = config()
    assert settings["_INSTALL"] == ("slim" if default_model_path().suffix == ".onnx" else "full")


@pytest.mark.parametrize("name,value", [("MEMORY_LIMIT_MB", "lots"), ("MEMORY_LIMIT_MB", "10"), ("HOST", "example.com"),
                                        ("FORWARDED_ALLOW_IPS", "10.0.0.1/8"), ("FORWARDED_ALLOW_IPS", "router")])
def test_bad_memory_host_and_proxy_settings_stop_it_with_one_line(name, value):
    result = run_config(**{name: value})
    assert result.returncode == 3
    assert result.stderr.startswith(f"Cannot start the mask classifier: {name} must be ") and value in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize("environ,expected", [
    ({}, "127.0.0.1,::1"),  # gunicorn may face clients itself: only a proxy on this machine is believed
    ({"DYNO": "web.1"}, "*"),  # only Heroku's router reaches a dyno
    ({"DYNO": "web.1", "FORWARDED_ALLOW_IPS": "10.0.0.0/8, 192.0.2.7"}, "10.0.0.0/8,192.0.2.7"),
])
def test_forwarded_headers_are_believed_from_heroku_s_router_or_this_machine_only(environ, expected):
    assert config(**environ)[0]["forwarded_allow_ips"] == expected


@pytest.mark.parametrize("environ,expected", [({"PORT": "8123"}, "0.0.0.0:8123"),
                                              ({"HOST": "127.0.0.1", "PORT": "5000"}, "127.0.0.1:5000"),
                                              ({"HOST": "::1"}, "[::1]:8000")])
def test_it_listens_on_every_interface_unless_told_a_host(environ, expected):
    assert config(**environ)[0]["bind"] == expected


def test_idle_connections_outlive_heroku_routers_on_heroku_only():
    """Router 2.0 keeps an idle connection to the dyno for 90 s: the dyno closing it first races with a request the
    router sends on it. Elsewhere idle connections go after 5 s (they cost a socket, not a thread, either way)."""
    assert config(DYNO="web.1")[0]["keepalive"] > 90
    assert config()[0]["keepalive"] == 5


def test_requests_under_way_can_finish_before_heroku_kills_the_dyno():
    """Heroku sends SIGTERM, then SIGKILL 30 s later: a request that has its photo when the SIGTERM comes must be
    answered (it waits for a slot, then does its per-face work) within gunicorn's graceful timeout."""
    graceful_timeout = config()[0]["graceful_timeout"]
    assert Settings.queue_timeout_s + Settings.face_time_budget_s < graceful_timeout < 30


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_run_starts_the_procfile_s_stack_on_the_loopback():
    # Not the caller's HOST or PORT, nor a parent make's flags (under `make test` make -n would say which folder
    # it enters)
    env = {name: value for name, value in os.environ.items()
           if name not in ("HOST", "PORT", "MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    output = subprocess.run(["make", "--no-print-directory", "-n", "run"], cwd=ROOT, env=env, capture_output=True,
                            text=True, check=True, timeout=60).stdout
    command = shlex.split(output.strip().splitlines()[-1])
    assert command[:3] == ["HOST=127.0.0.1", "PORT=5000", ".venv/bin/python"]
    assert command[3:] == procfile_web_command()


def test_bin_web_serves_on_the_host_it_is_given(tiny_model):
    with serving(tiny_model, HOST="127.0.0.1") as served:
        pass
    assert f"Listening at: http://127.0.0.1:{served.port}" in served.output


def test_api_model_states_the_memory_budget_the_worker_runs_under(make_app):
    """gunicorn.conf.py hands its workers WORKER_MEMORY_MB (the owner's, or the install's measured budget)."""
    assert "worker_memory_budget_mb" not in make_app().test_client().get("/api/model").get_json()
    assert make_app(worker_memory_mb=320).test_client().get("/api/model").get_json()["worker_memory_budget_mb"] == 320
    settings = config(MEMORY_LIMIT_MB="512", MODEL_PATH="models/export.onnx")
    assert settings[0]["workers"] == 1


def test_the_worker_memory_budget_is_validated_once():
    from maskclassifier.core.config import ConfigError, settings_from_env

    assert settings_from_env({"WORKER_MEMORY_MB": "320"}).worker_memory_mb == 320
    with pytest.raises(ConfigError, match="WORKER_MEMORY_MB must be between 64 and 65536"):
        settings_from_env({"WORKER_MEMORY_MB": "12"})


def test_gunicorn_s_master_loads_no_flask_numpy_or_pillow():
    """The master imports gunicorn.conf.py and the worker class only (preload_app is off): with Flask, NumPy and
    Pillow it held 58 MB instead of 28, against the 30 MB the config counts for it."""
    code = ("import runpy, sys; runpy.run_path('gunicorn.conf.py'); import maskclassifier.web.worker; "
            "print(sorted(m for m in ('flask', 'numpy', 'PIL', 'onnxruntime', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "MODEL_PATH": "models/export.onnx"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
