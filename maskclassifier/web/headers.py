"""The security headers on every response: the app's (errors.py adds them) and those the gunicorn worker writes
itself (worker.py: refusals at the door, malformed requests). The standard library only, so that gunicorn's
master, which imports the worker class, loads no Flask, NumPy or Pillow."""

from __future__ import annotations

# 'wasm-unsafe-eval' lets the page compile WebAssembly (ONNX Runtime Web, on-device mode: web/ondevice.py), and
# nothing else: eval and inline script stay blocked. Workers (the page's service worker, /sw.js, and on-device
# mode's two, static/ondevice-runner.js) only from this origin.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self' 'wasm-unsafe-eval'; "
    "worker-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
