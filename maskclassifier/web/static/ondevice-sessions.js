// ONNX Runtime Web sessions as on-device mode runs them, in a Web Worker (static/ondevice-runner.js) or, where
// workers cannot start, on the page's own thread (static/ondevice.js): the runtime's one setup, the sessions
// made one after the other, and their runs one at a time. Loaded as self.MaskSessions, after the runtime.
(function (root) {
  "use strict";

  // ONNX Runtime Web runs one session at a time: a run started while another of the same runtime is still going
  // fails inside it (1.18.0: "Cannot read properties of null"), so every run waits for the one before.
  var queue = Promise.resolve();

  function queued(session) {
    return {
      inputNames: session.inputNames,
      outputNames: session.outputNames,
      run: function (feeds) {
        var ran = queue.then(function () { return session.run(feeds); });
        queue = ran.catch(function () { return null; });
        return ran;
      }
    };
  }

  // {name: model bytes} -> Promise of {name: session}, each with the runtime's inputNames, outputNames and
  // run(feeds) -> outputs. `wasmUrl`: the runtime's WebAssembly (SIMD, one thread: threads would need
  // cross-origin isolation, COOP/COEP, and fail on iOS Safari).
  function create(ort, wasmUrl, models) {
    ort.env.wasm.numThreads = 1;
    ort.env.wasm.simd = true;
    ort.env.wasm.proxy = false;
    ort.env.wasm.wasmPaths = { "ort-wasm-simd.wasm": wasmUrl };
    var options = { executionProviders: ["wasm"], graphOptimizationLevel: "all" };
    var made = {};
    // one after the other: the first sets up the runtime's WebAssembly
    return Object.keys(models).reduce(function (chain, name) {
      return chain.then(function () {
        return ort.InferenceSession.create(models[name], options).then(function (session) {
          made[name] = queued(session);
        });
      });
    }, Promise.resolve()).then(function () { return made; });
  }

  root.MaskSessions = { create: create };
})(self);
