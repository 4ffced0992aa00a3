"""The test and benchmark harness: what tests/ and benchmarks/ both need to drive the app from outside (the
Procfile's server on a loopback port, waiting for it, multipart bodies). Development only: it sits beside the
package, not in it, so pyproject's `packages.find` (maskclassifier*) never ships it. It imports nothing of
maskclassifier, so either install can use it.

Tests import it through pytest's pythonpath ("."), benchmarks because `python -m benchmarks.x` runs from the root.
"""
