// A Web Worker of on-device mode (static/ondevice.js): it holds ONNX Runtime Web sessions and runs them off the
// page's thread. The page starts two, one for the classifier and one for the face detector's three networks, so
// that on a device with two cores or more they work side by side (the live camera searches one frame for faces
// while the last frame's faces are classified) and the page stays responsive meanwhile. Each still runs one
// WebAssembly thread: threads within a session would need cross-origin isolation (COOP/COEP) and fail on iOS
// Safari. Nothing here touches a photo beyond the tensors the page sends.
//
// Messages, page -> worker -> page:
//   {init: {runtime, sessions, wasm, models: {name: bytes}}}  -> {ready: {name: {inputNames, outputNames}}} | {failed}
//   {id, run: name, feeds: {input: {type, data, dims}}}      -> {id, outputs: {output: {type, data, dims}}} | {id, failed}
// Runs wait for one another (static/ondevice-sessions.js says why).
// The outputs' buffers are transferred, not copied; so are the feeds' (the page makes new ones for every run).
"use strict";

var sessions = {};

function reason(error) {
  return (error && error.message) || String(error || "unknown reason");
}

function init(message) {
  // the WebAssembly backend alone (ort.wasm-core.min.js), then the sessions' setup the page's thread shares
  importScripts(message.runtime, message.sessions);
  return self.MaskSessions.create(self.ort, message.wasm, message.models).then(function (made) {
    sessions = made;
    var described = {};
    Object.keys(made).forEach(function (name) {
      described[name] = { inputNames: made[name].inputNames, outputNames: made[name].outputNames };
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
  run(message).then(function (done) {
    self.postMessage({ id: message.id, outputs: done.outputs }, done.buffers);
  }, function (error) {
    self.postMessage({ id: message.id, failed: reason(error) });
  });
};
