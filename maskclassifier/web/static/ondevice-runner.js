// A Web Worker of on-device mode (static/ondevice.js): it holds ONNX Runtime Web sessions and runs them off the
// page's thread. The page starts two, one for the classifier and one for the face detector's three networks, so
// that on a device with two cores or more they work side by side (the live camera searches one frame for faces
// while the last frame's faces are classified) and the page stays responsive meanwhile. Each still runs one
// WebAssembly thread: threads within a session would need cross-origin isolation (COOP/COEP) and fail on iOS
// Safari. Nothing here touches a photo beyond the tensors the page sends.
//
// Messages, page -> worker -> page:
//   {init: {runtime, wasm, models: {name: bytes}}}       -> {ready: {name: {inputNames, outputNames}}} | {failed}
//   {id, run: name, feeds: {input: {type, data, dims}}}  -> {id, outputs: {output: {type, data, dims}}} | {id, failed}
// The outputs' buffers are transferred, not copied; so are the feeds' (the page makes new ones for every run).
"use strict";

var sessions = {};
// ONNX Runtime Web runs one session at a time: a run started while another is still going fails inside the
// runtime (1.18.0: "Cannot read properties of null"), so runs wait for the one before.
var queue = Promise.resolve();

function reason(error) {
  return (error && error.message) || String(error || "unknown reason");
}

function init(message) {
  importScripts(message.runtime);  // ort.wasm-core.min.js: the WebAssembly backend alone
  var ort = self.ort;
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.simd = true;
  ort.env.wasm.proxy = false;
  ort.env.wasm.wasmPaths = { "ort-wasm-simd.wasm": message.wasm };
  var options = { executionProviders: ["wasm"], graphOptimizationLevel: "all" };
  var names = Object.keys(message.models);
  // one after the other: the runtime's WebAssembly is set up by the first
  return names.reduce(function (chain, name) {
    return chain.then(function () {
      return ort.InferenceSession.create(message.models[name], options).then(function (session) {
        sessions[name] = session;
      });
    });
  }, Promise.resolve()).then(function () {
    var described = {};
    names.forEach(function (name) {
      described[name] = { inputNames: sessions[name].inputNames, outputNames: sessions[name].outputNames };
    });
    return described;
  });
}

function run(message) {
  var ort = self.ort, session = sessions[message.run];
  if (!session) { return Promise.reject(new Error("no session " + message.run)); }
  var feeds = {};
  Object.keys(message.feeds).forEach(function (name) {
    var feed = message.feeds[name];
    feeds[name] = new ort.Tensor(feed.type, feed.data, feed.dims);
  });
  return session.run(feeds).then(function (outputs) {
    var answer = {}, buffers = [];
    Object.keys(outputs).forEach(function (name) {
      // a copy the worker can give away: the runtime may reuse its own buffers
      var data = outputs[name].data.slice();
      answer[name] = { type: outputs[name].type, data: data, dims: outputs[name].dims };
      buffers.push(data.buffer);
    });
    return { outputs: answer, buffers: buffers };
  });
}

self.onmessage = function (event) {
  var message = event.data;
  if (message.init) {
    var started;
    try { started = init(message.init); } catch (error) { started = Promise.reject(error); }
    started.then(function (described) {
      self.postMessage({ ready: described });
    }, function (error) {
      self.postMessage({ failed: reason(error) });
    });
    return;
  }
  var ran = queue.then(function () { return run(message); });
  queue = ran.catch(function () { return null; });
  ran.then(function (done) {
    self.postMessage({ id: message.id, outputs: done.outputs }, done.buffers);
  }, function (error) {
    self.postMessage({ id: message.id, failed: reason(error) });
  });
};
