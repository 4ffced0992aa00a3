#!/bin/sh
# Re-vendors ONNX Runtime Web for the page's on-device mode (issue 30) from npm: only the two files the page loads
# (the wasm backend without the proxy worker or threads, `ort.wasm-core.min.js`, and the SIMD, non-threaded
# WebAssembly binary `ort-wasm-simd.wasm`) plus the licence. Not run in CI; run it by hand to change the pin,
# then update ORT_WEB_VERSION in maskclassifier/web/ondevice.py.
#   sh scripts/vendor_ort.sh [VERSION]
# 1.18.0 is the last release with a non-threaded SIMD binary: from 1.19 every binary is the threaded one
# (14.8 MB in 1.31.1 against 10.6 MB here), and threads need COOP/COEP headers and break on iOS Safari.
set -eu
VERSION="${1:-1.18.0}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEST="$ROOT/maskclassifier/web/static/vendor/onnxruntime-web-$VERSION"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
(cd "$WORK" && npm pack --silent "onnxruntime-web@$VERSION" >/dev/null 2>&1 && tar xzf "onnxruntime-web-$VERSION.tgz")
mkdir -p "$DEST"
cp "$WORK/package/dist/ort.wasm-core.min.js" "$WORK/package/dist/ort-wasm-simd.wasm" "$DEST/"
# The npm package ships no licence file; the project's (github.com/microsoft/onnxruntime, LICENSE) is MIT:
cat > "$DEST/LICENSE" <<'LICENCE'
ONNX Runtime Web (npm package onnxruntime-web), vendored by scripts/vendor_ort.sh: ort.wasm-core.min.js and
ort-wasm-simd.wasm, unmodified.

MIT License

Copyright (c) Microsoft Corporation

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE
LICENCE
(cd "$DEST" && sha256sum ort.wasm-core.min.js ort-wasm-simd.wasm > SHA256SUMS)
echo "vendored onnxruntime-web $VERSION into $DEST"
