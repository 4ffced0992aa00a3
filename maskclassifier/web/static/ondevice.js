// On-device mode (issue 30, templates/_ondevice.html): once the page is usable, ONNX Runtime Web (vendored, the
// SIMD WebAssembly build on one thread) and the served model's ONNX twin are loaded in the background; from then
// on a whole-photo answer is worked out in this browser and the photo never leaves it. The server stays the
// fallback and the reference:
// - the model's input is the server's: the browser decodes the photo upright (EXIF orientation applied) and
//   repeats the server's item Resize byte for byte (static/ondevice-resize.js, a port of Pillow's); the ONNX
//   graph holds the rest (/255, the resample, the normalisation, the sigmoid);
// - the decision rules (threshold, the wide-photo views, test-time augmentation) are read from GET /api/model;
// - the answer is worded by the server's own template from the probabilities alone (POST /result/computed:
//   numbers, never pixels), so a device answer and a server answer read alike;
// - the server answers whatever the device does not: per-face modes, the live camera, the heat-maps, photos over
//   4096 px or with transparency, everything while the model loads, and everything on a device without
//   WebAssembly (SIMD), with little memory, or slower than the server.
// The switch turns it off (remembered in localStorage); ?device=off in the address forces the server.
// The networks run in two Web Workers (static/ondevice-runner.js: the classifier in one, the face detector in the
// other), so that the live camera searches a frame for faces while the last frame's faces are classified; where
// workers cannot start, they run on the page's own thread, one after the other.
(function () {
  "use strict";
  var section = document.getElementById("ondevice");
  if (!section) { return; }
  var toggle = document.getElementById("ondevice-toggle");
  var statusLine = document.getElementById("ondevice-status");
  var STORAGE_KEY = "maskclassifier.ondevice";
  var SLOW_MS = 1500;  // a forward pass slower than this (or than the server's last answer, if that was slower) stays off
  var MIN_MEMORY_GB = 1;  // navigator.deviceMemory below this: the model and a decoded photo would not fit well
  var MAX_SIDE = 4096;  // the server reduces non-JPEG photos beyond this while decoding; such photos go there
  var PREVIEW_SIZE = 800;  // the result's copy of the photo, as the server's preview
  var WORKER_WAIT_MS = 3000;  // on a first visit, how long the model's download waits for the service worker
  var RUNNER_START_MS = 30000;  // a Web Worker that has not set up its sessions by then is given up for the page
  // A minimal module using a SIMD instruction (as in wasm-feature-detect): validates only where SIMD is supported.
  var SIMD_PROBE = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 10, 1, 8, 0,
                                   65, 0, 253, 15, 253, 98, 11]);
  var forcedOff = /(^|[?&])device=off(&|$)/.test(location.search.slice(1));
  var state = "idle";  // idle, loading, ready, slow, unavailable, failed
  var config = null;  // GET /api/model
  var rules = null;
  var session = null;
  var detectorSessions = null;  // MTCNN's three networks, when the server has the ONNX detector
  var runners = [];  // the Web Workers running the sessions (empty when they run on the page's thread)
  var loading = null;
  var serverMs = null;  // the server's last answer, round trip
  var offline = false;  // the server could not be reached: the page and the model came from the saved copy
  var stats = { readyAt: null, forwardMs: null, lastMs: null, modelBytes: null, runtimeBytes: null, detectorBytes: null,
                runsIn: null };  // "workers" or "page" once ready
  section.hidden = false;

  function say(text) { statusLine.textContent = text; }

  function remembered() {
    try { return window.localStorage.getItem(STORAGE_KEY) !== "off"; } catch (error) { return true; }
  }

  function remember(on) {
    try { window.localStorage.setItem(STORAGE_KEY, on ? "on" : "off"); } catch (error) { /* private mode */ }
  }

  // Why this browser cannot run the model, in plain words; null when it can.
  function unsupported() {
    if (typeof WebAssembly !== "object" || typeof WebAssembly.validate !== "function") {
      return "This browser cannot run the model itself (it has no WebAssembly), so photos are classified on the server.";
    }
    var simd = false;
    try { simd = WebAssembly.validate(SIMD_PROBE); } catch (error) { simd = false; }
    if (!simd) {
      return "This browser's WebAssembly is too old to run the model (no SIMD), so photos are classified on the server.";
    }
    if (!window.createImageBitmap || !window.fetch) {
      return "This browser cannot prepare photos for the model, so photos are classified on the server.";
    }
    if (navigator.deviceMemory && navigator.deviceMemory < MIN_MEMORY_GB) {
      return "This device has too little memory to run the model, so photos are classified on the server.";
    }
    return null;
  }

  function loadScript(src) {
    return new Promise(function (resolve, reject) {
      var script = document.createElement("script");
      script.src = src;
      script.onload = resolve;
      script.onerror = function () { reject(new Error("could not load " + src)); };
      document.head.appendChild(script);
    });
  }

  function megabytes(bytes) { return (bytes / 1e6).toFixed(1) + " MB"; }

  // The model's bytes, with the progress in the status line.
  function fetchModel(url, total) {
    return fetch(url).then(function (response) {
      if (!response.ok) { throw new Error("the model could not be downloaded (status " + response.status + ")"); }
      if (!response.body || !response.body.getReader) { return response.arrayBuffer(); }
      var reader = response.body.getReader();
      var parts = [], received = 0;
      function pump() {
        return reader.read().then(function (chunk) {
          if (chunk.done) {
            var all = new Uint8Array(received), offset = 0;
            parts.forEach(function (part) { all.set(part, offset); offset += part.length; });
            return all;
          }
          parts.push(chunk.value);
          received += chunk.value.length;
          if (state === "loading" && toggle.checked) {
            say("Getting on-device mode ready: " + megabytes(received) + " of " + megabytes(total) +
                " downloaded (once). Photos go to the server meanwhile.");
          }
          return pump();
        });
      }
      return pump();
    });
  }

  function fetchAll(urls) {
    var names = Object.keys(urls);
    return Promise.all(names.map(function (name) {
      return fetch(urls[name]).then(function (response) {
        if (!response.ok) { throw new Error("the face detector could not be downloaded"); }
        return response.arrayBuffer();
      });
    })).then(function (buffers) {
      var files = {};
      names.forEach(function (name, index) { files[name] = new Uint8Array(buffers[index]); });
      return files;
    });
  }

  function begin() {
    if (forcedOff) {
      say("On-device mode is off for this address (?device=off): photos are classified on the server.");
      return;
    }
    if (!toggle.checked) {
      say("On-device mode is off: photos are classified on the server.");
      return;
    }
    var problem = unsupported();
    if (problem) {
      state = "unavailable";
      say(problem);
      return;
    }
    if (state === "ready") { sayReady(); return; }
    if (state === "slow") { saySlow(); return; }
    if (state === "loading") {
      say("Getting on-device mode ready: downloading the model (once). Photos go to the server meanwhile.");
      return;
    }
    if (!loading) { loading = load(); }
  }

  // The service worker (templates/sw.js) saves the page, the runtime and the model, so that on-device mode still
  // answers on a later visit without the server. On a first visit the model's download waits (a little) until
  // the worker controls the page, so that it is saved as it comes, not downloaded twice.
  function registerWorker() {
    var url = section.getAttribute("data-worker");
    if (!url || !navigator.serviceWorker) { return Promise.resolve(); }
    return navigator.serviceWorker.register(url).then(function () {
      if (navigator.serviceWorker.controller) { return null; }
      return new Promise(function (resolve) {
        navigator.serviceWorker.addEventListener("controllerchange", resolve);
        setTimeout(resolve, WORKER_WAIT_MS);
      });
    }).catch(function () { return null; });  // no saved copy (e.g. private mode): everything else still works
  }

  // ---- the sessions: in Web Workers, or on the page's thread ------------------------------------------------

  // A tensor as the page hands it to a session: ONNX Runtime's own where the runtime is loaded on the page, else
  // the three fields a worker needs (the runtime then lives in the workers only).
  function Feed(type, data, dims) { this.type = type; this.data = data; this.dims = dims; }
  var FEEDS = { Tensor: Feed };
  function tensors() { return stats.runsIn === "page" ? window.ort : FEEDS; }

  // One Web Worker (static/ondevice-runner.js) holding the sessions of `models` ({name: bytes}); resolves to
  // {name: session}, each session with the runtime's inputNames, outputNames and run(feeds) -> outputs.
  function runner(models) {
    return new Promise(function (resolve, reject) {
      var worker = new Worker(section.getAttribute("data-runner"));
      runners.push(worker);
      var pending = {}, next = 0, stopped = null;
      function fail(why) {
        var error = stopped = new Error(why || "the on-device worker stopped");
        Object.keys(pending).forEach(function (id) { pending[id].reject(error); });
        pending = {};
        reject(error);
      }
      var timer = setTimeout(function () { fail("the on-device worker did not start in time"); }, RUNNER_START_MS);
      worker.onerror = function (event) { event.preventDefault(); fail(event.message); };
      worker.onmessageerror = function () { fail("the on-device worker sent what the page cannot read"); };
      worker.onmessage = function (event) {
        var message = event.data;
        if (message.ready || (message.failed && message.id === undefined)) {
          clearTimeout(timer);
          if (message.failed) { fail(message.failed); return; }
          var made = {};
          Object.keys(message.ready).forEach(function (name) {
            made[name] = {
              inputNames: message.ready[name].inputNames,
              outputNames: message.ready[name].outputNames,
              run: function (feeds) {
                if (stopped) { return Promise.reject(stopped); }  // each later photo or frame then says so
                return new Promise(function (done, failed) {
                  var id = next++, plain = {}, buffers = [];
                  Object.keys(feeds).forEach(function (input) {
                    var feed = feeds[input];
                    plain[input] = { type: feed.type, data: feed.data, dims: feed.dims };
                    buffers.push(feed.data.buffer);  // made for this run alone: given to the worker, not copied
                  });
                  pending[id] = { resolve: done, reject: failed };
                  worker.postMessage({ id: id, run: name, feeds: plain }, buffers);
                });
              }
            };
          });
          resolve(made);
          return;
        }
        var waiting = pending[message.id];
        if (!waiting) { return; }
        delete pending[message.id];
        if (message.failed) { waiting.reject(new Error(message.failed)); } else { waiting.resolve(message.outputs); }
      };
      function address(url) { return new URL(url, location.href).href; }
      worker.postMessage({ init: { runtime: address(section.getAttribute("data-runtime")),
                                   sessions: address(section.getAttribute("data-sessions")),
                                   wasm: address(config.on_device.runtime.wasm_url), models: models } });
    });
  }

  function inWorkers(groups) {
    if (typeof Worker !== "function") { return Promise.reject(new Error("no Web Workers")); }
    return Promise.all(groups.map(runner));
  }

  // The same sessions on the page's thread (the runtime loaded here), where Web Workers cannot start; made and run
  // as in a worker (static/ondevice-sessions.js), one run at a time.
  function onThePage(groups) {
    return loadScript(section.getAttribute("data-runtime")).then(function () {
      return loadScript(section.getAttribute("data-sessions"));
    }).then(function () {
      var made = [];
      return groups.reduce(function (chain, models) {
        return chain.then(function () {
          return window.MaskSessions.create(window.ort, config.on_device.runtime.wasm_url, models);
        }).then(function (sessions) { made.push(sessions); });
      }, Promise.resolve()).then(function () { return made; });
    });
  }

  function load() {
    state = "loading";
    loading = true;
    var mb = section.getAttribute("data-model-mb");
    say("Getting on-device mode ready: downloading the model (" + mb + " MB, once). Photos go to the server meanwhile.");
    return registerWorker().then(function () {
      return fetch(section.getAttribute("data-config"));
    }).then(function (response) {
      if (!response.ok) { throw new Error("the model's description could not be read"); }
      offline = response.headers.get("X-Served-Offline") === "1";
      return response.json();
    }).then(function (body) {
      if (!body.on_device || !body.decision_rules || !body.decision_rules.item_resize) {
        throw new Error("this server offers no on-device model");
      }
      config = body;
      rules = body.decision_rules;
      stats.modelBytes = body.on_device.model_bytes;
      stats.runtimeBytes = body.on_device.runtime.bytes;
      stats.detectorBytes = body.on_device.detector_bytes || 0;
      var detector = body.on_device.detector;
      return Promise.all([fetchModel(body.on_device.model_url, body.on_device.model_bytes),
                          loadScript(section.getAttribute("data-resize")),
                          detector ? loadScript(section.getAttribute("data-faces")) : null,
                          detector ? fetchAll(detector) : null]);
    }).then(function (loaded) {
      var groups = [{ model: loaded[0] }];
      if (loaded[3]) { groups.push({ pnet: loaded[3].pnet, rnet: loaded[3].rnet, onet: loaded[3].onet }); }
      return inWorkers(groups).then(function (made) {
        stats.runsIn = "workers";
        return made;
      }, function () {
        runners.forEach(function (runner) { runner.terminate(); });
        runners = [];
        stats.runsIn = "page";
        return onThePage(groups);
      });
    }).then(function (made) {
      session = made[0].model;
      detectorSessions = made[1] || null;
      var size = rules.item_resize;
      var blank = [new Uint8Array(size.width * size.height * 3)];
      return forward(blank).then(function () {  // the first pass sets up the runtime's memory: not timed
        var started = performance.now();
        return forward(blank).then(function () { return performance.now() - started; });
      });
    }).then(function (ms) {
      stats.forwardMs = ms;
      stats.readyAt = performance.now();
      state = tooSlow(ms) ? "slow" : "ready";
      begin();  // says where photos go now (the switch may have been turned off meanwhile)
    }).catch(function (error) {
      state = "failed";
      loading = null;  // turning the switch off and on tries again
      say("On-device mode could not start (" + (error && error.message ? error.message : "unknown reason") +
          "), so photos are classified on the server.");
    });
  }

  function tooSlow(ms) { return ms > Math.max(SLOW_MS, serverMs || 0); }

  function sayReady() {
    if (offline) {
      say("The server cannot be reached. Photos are still classified on this device, with the model saved on an " +
          "earlier visit; the “Why?” heat-maps and everything else need the server.");
      return;
    }
    say(detectorSessions
        ? "On-device mode is on: photos and their faces are classified in this browser and do not leave this device " +
          "(the “Why?” heat-maps still use the server)."
        : "On-device mode is on: whole photos are classified in this browser and do not leave this device. Per-face " +
          "answers and the “Why?” heat-maps still use the server.");
  }

  function saySlow() {
    say("This device runs the model more slowly than the server answers (" + Math.round(stats.forwardMs) +
        " ms a photo), so photos are classified on the server.");
  }

  toggle.checked = !forcedOff && remembered();
  toggle.disabled = forcedOff;
  toggle.addEventListener("change", function () {
    remember(toggle.checked);
    begin();
  });

  // ---- classifying ------------------------------------------------------------------------------------------

  // (n, height, width, 3) uint8 item-resized images -> n rows of probabilities (Float32Array each)
  function forward(inputs) {
    var size = rules.item_resize, one = size.width * size.height * 3;
    var batch = new Uint8Array(inputs.length * one);
    inputs.forEach(function (input, index) { batch.set(input, index * one); });
    var feeds = {}, made = tensors();
    feeds[session.inputNames[0]] = new made.Tensor("uint8", batch, [inputs.length, size.height, size.width, 3]);
    return session.run(feeds).then(function (outputs) {
      var data = outputs[session.outputNames[0]].data, k = data.length / inputs.length, rows = [];
      for (var i = 0; i < inputs.length; i++) { rows.push(data.subarray(i * k, (i + 1) * k)); }
      return rows;
    });
  }

  function mirrored(input) {
    var size = rules.item_resize, out = new Uint8Array(input.length);
    for (var y = 0; y < size.height; y++) {
      for (var x = 0; x < size.width; x++) {
        var from = (y * size.width + x) * 3, to = (y * size.width + size.width - 1 - x) * 3;
        out[to] = input[from]; out[to + 1] = input[from + 1]; out[to + 2] = input[from + 2];
      }
    }
    return out;
  }

  // As Classifier._batched: max_batch images a pass; with tta "flip", each row the mean of the image's and its
  // mirror image's probabilities (core/tta.py average_mirrored).
  function batched(inputs) {
    var rows = [], chain = Promise.resolve();
    for (var start = 0; start < inputs.length; start += rules.max_batch) {
      (function (chunk) {
        chain = chain.then(function () {
          if (rules.tta !== "flip") { return forward(chunk); }
          return forward(chunk.concat(chunk.map(mirrored))).then(function (both) {
            var half = both.length / 2;
            return both.slice(0, half).map(function (row, index) {
              var mean = new Float32Array(row.length);
              for (var j = 0; j < row.length; j++) { mean[j] = (row[j] + both[half + index][j]) / 2; }
              return mean;
            });
          });
        }).then(function (chunkRows) { rows = rows.concat(chunkRows); });
      })(inputs.slice(start, start + rules.max_batch));
    }
    return chain.then(function () { return rows; });
  }

  // Python's round(): halves to the even neighbour.
  function roundHalfEven(value) {
    var floor = Math.floor(value), diff = value - floor;
    if (diff > 0.5) { return floor + 1; }
    if (diff < 0.5) { return floor; }
    return floor % 2 === 0 ? floor : floor + 1;
  }

  // classifier.square_views
  function squareViews(width, height, limit) {
    var side = Math.min(width, height), length = Math.max(width, height);
    var count = Math.min(limit, Math.max(2, Math.ceil((length - side) / (side / 2)) + 1));
    var boxes = [];
    for (var index = 0; index < count; index++) {
      var offset = roundHalfEven(index * (length - side) / (count - 1));
      boxes.push(width >= height ? [offset, 0, offset + side, side] : [0, offset, side, offset + side]);
    }
    return boxes;
  }

  // classifier.decide: the categories strictly above the threshold, most probable first
  function labelsOf(row) {
    var vocab = config.categories, names = [];
    for (var i = 0; i < vocab.length; i++) { if (row[i] > rules.threshold) { names.push(i); } }
    names.sort(function (a, b) { return row[b] - row[a]; });
    return names.map(function (i) { return vocab[i]; });
  }

  // classifier.answering_view: of the views whose answer names a face category first with at least
  // view_min_probability, the one least likely "-"; -1 when none does (the centre square answers).
  function answeringView(views) {
    var vocab = config.categories, least = Math.fround(rules.view_min_probability), faces = [];
    views.forEach(function (row, index) {
      var labels = labelsOf(row);
      if (labels.length && labels[0] !== "-" && row[vocab.indexOf(labels[0])] >= least) { faces.push(index); }
    });
    if (!faces.length) { return -1; }
    var background = vocab.indexOf("-");
    var best = faces[0];
    faces.forEach(function (index) {
      if (background < 0) {
        if (Math.max.apply(null, views[index]) > Math.max.apply(null, views[best])) { best = index; }
      } else if (views[index][background] < views[best][background]) {
        best = index;
      }
    });
    return best;
  }

  // Whether the browser decodes this file to the pixels Pillow decodes: 8-bit RGB or grey JPEGs (not CMYK or
  // YCCK, which Pillow converts with another formula), 8-bit PNGs (not 16-bit: another rounding), GIF and BMP.
  // Other formats (WebP, AVIF, ...) were not compared, so they go to the server.
  function decodesAlike(file) {
    return file.slice(0, 65536).arrayBuffer().then(function (buffer) {
      var bytes = new Uint8Array(buffer);
      if (bytes[0] === 0xFF && bytes[1] === 0xD8) {  // JPEG: the frame header's number of components
        var at = 2;
        while (at + 9 < bytes.length && bytes[at] === 0xFF) {
          var marker = bytes[at + 1], length = (bytes[at + 2] << 8) | bytes[at + 3];
          if (marker >= 0xC0 && marker <= 0xCF && marker !== 0xC4 && marker !== 0xC8 && marker !== 0xCC) {
            return bytes[at + 9] === 1 || bytes[at + 9] === 3;
          }
          at += 2 + length;
        }
        return false;
      }
      if (bytes[0] === 0x89 && bytes[1] === 0x50 && bytes[2] === 0x4E && bytes[3] === 0x47) { return bytes[24] <= 8; }
      if (bytes[0] === 0x47 && bytes[1] === 0x49 && bytes[2] === 0x46) { return true; }  // GIF
      return bytes[0] === 0x42 && bytes[1] === 0x4D;  // BMP
    });
  }

  // The photo decoded upright (EXIF orientation applied, no colour management: as Pillow decodes it) into RGBA
  // pixels, and the result's preview. Rejects what the device does not answer as the server would.
  function decode(file) {
    return decodesAlike(file).then(function (alike) {
      if (!alike) { throw new Error("a format the device does not decode as the server does"); }
      return createImageBitmap(file, { imageOrientation: "from-image", colorSpaceConversion: "none",
                                     premultiplyAlpha: "none" });
    }).then(function (bitmap) {
      var width = bitmap.width, height = bitmap.height;
      if (Math.max(width, height) > MAX_SIDE) { bitmap.close(); throw new Error("too large for the device"); }
      var canvas = document.createElement("canvas");
      canvas.width = width;
      canvas.height = height;
      var context = canvas.getContext("2d", { willReadFrequently: true });
      context.drawImage(bitmap, 0, 0);
      var pixels = context.getImageData(0, 0, width, height).data;
      for (var i = 3; i < pixels.length; i += 4) {
        if (pixels[i] !== 255) { bitmap.close(); throw new Error("transparent"); }  // Pillow keeps hidden colours
      }
      var scale = Math.min(1, PREVIEW_SIZE / Math.max(width, height));
      var small = document.createElement("canvas");
      small.width = Math.max(1, Math.round(width * scale));
      small.height = Math.max(1, Math.round(height * scale));
      var smallContext = small.getContext("2d");
      smallContext.imageSmoothingQuality = "high";
      smallContext.drawImage(bitmap, 0, 0, small.width, small.height);
      bitmap.close();
      return { pixels: pixels, width: width, height: height, canvas: canvas,
               preview: small.toDataURL("image/jpeg", 0.85) };
    });
  }

  // Classifier.probabilities for regions of one photo (the whole photo, face crops): each region item-resized,
  // and a region wider or taller than views_aspect also as its square views (one of which may answer).
  function regionsProbabilities(photo, regions) {
    var size = rules.item_resize;
    function input(region) { return window.MaskResize.itemResize(photo.pixels, photo.width, 4, region, size); }
    return batched(regions.map(input)).then(function (rows) {
      var chain = Promise.resolve();
      regions.forEach(function (region, index) {
        var w = region[2] - region[0], h = region[3] - region[1];
        if (Math.max(w, h) <= rules.views_aspect * Math.min(w, h)) { return; }
        chain = chain.then(function () {
          var views = squareViews(w, h, rules.max_views).map(function (box) {
            return [region[0] + box[0], region[1] + box[1], region[0] + box[2], region[1] + box[3]];
          });
          return batched(views.map(input)).then(function (viewRows) {
            var answering = answeringView(viewRows);
            if (answering >= 0) { rows[index] = viewRows[answering]; }
          });
        });
      });
      return chain.then(function () { return rows; });
    });
  }

  function probabilitiesOf(photo) {
    return regionsProbabilities(photo, [[0, 0, photo.width, photo.height]]).then(function (rows) { return rows[0]; });
  }

  // faces.analyse's inputs for mode "auto" or "on": the faces found, the whole photo's and each face crop's
  // probabilities (the server decides the rest: close-up, notes, the words).
  // The whole photo is classified while its faces are searched (each in its own worker).
  function facesOf(photo) {
    var faces = rules.faces;
    var whole = probabilitiesOf(photo);
    whole.catch(function () { return null; });  // if the face search fails first, its error is the one reported
    return window.MaskFaces.detect(tensors(), detectorSessions, photo, faces).then(function (scan) {
      var regions = scan.faces.map(function (face) {
        return window.MaskFaces.cropBox(face.box, photo.width, photo.height, faces.face_margin);
      });
      return Promise.all([whole, regionsProbabilities(photo, regions)]).then(function (both) {
        return {
          size: [photo.width, photo.height], found: scan.found, probabilities: Array.prototype.slice.call(both[0]),
          faces: scan.faces.map(function (face, index) {
            return { box: face.box, score: face.score, crop: regions[index],
                     probabilities: Array.prototype.slice.call(both[1][index]) };
          })
        };
      });
    });
  }

  function probabilities(file) {
    var started = performance.now();
    return decode(file).then(function (photo) {
      return probabilitiesOf(photo).then(function (row) {
        stats.lastMs = performance.now() - started;
        return { photo: photo, probabilities: Array.prototype.slice.call(row), ms: stats.lastMs };
      });
    });
  }

  // For benchmarks/ondevice.py: what the device sends for mode auto/on, and the time it took.
  function faceAnswer(file) {
    var started = performance.now();
    return decode(file).then(function (photo) {
      return facesOf(photo).then(function (answer) {
        answer.ms = performance.now() - started;
        return answer;
      });
    });
  }

  // ---- the live camera (static/live.js): one frame answered here, nothing sent --------------------------------

  // drawing.caption_lines and colour_for, with the server's words and colours (GET /api/model on_device.captions)
  function percentText(p) { return Math.round(p * 100) + "%"; }

  function caption(number, row) {
    var words = config.on_device.captions, vocab = config.categories, labels = labelsOf(row);
    if (!labels.length) {
      var top = 0;
      for (var i = 1; i < row.length; i++) { if (row[i] > row[top]) { top = i; } }
      return number + " " + words.unsure + " " + words.short[vocab[top]] + " " + percentText(row[top]);
    }
    var lines = labels.slice(0, words.labels).map(function (name) {
      return words.short[name] + " " + percentText(row[vocab.indexOf(name)]);
    });
    if (labels.length > words.labels) { lines[lines.length - 1] += " +" + (labels.length - words.labels); }
    return number + " " + lines.join(" ");
  }

  function colourOf(row) {
    var labels = labelsOf(row), words = config.on_device.captions;
    return labels.length ? words.colours[labels[0]] : words.unsure_colour;
  }

  // faces.analyse_frame on a canvas holding the frame: each face found (at frame_detection_side) and its crop's
  // answer, as /api/frame's JSON would give them.
  // The server's caveat (GET /api/model on_device.captions.caveats, classifier.caveat_note's rule) for the
  // categories learnt mostly from drawings that any face names, as /api/frame sends it; null when none is named.
  function caveatNote(faces) {
    var caveats = config.on_device.captions.caveats || {};
    var named = Object.keys(caveats).filter(function (name) {
      return faces.some(function (face) { return face.labels.indexOf(name) >= 0; });
    });
    return named.length ? named.map(function (name) { return caveats[name]; }).join(" ") : null;
  }

  // `detected`, if given, is called once the faces are found and their crops are queued for the classifier: the
  // camera may then take its next frame, whose faces are searched while these are classified.
  function frame(canvas, detected) {
    var started = performance.now();
    var pixels = canvas.getContext("2d", { willReadFrequently: true }).getImageData(0, 0, canvas.width, canvas.height).data;
    var photo = { pixels: pixels, width: canvas.width, height: canvas.height };
    var faces = rules.faces;
    return window.MaskFaces.detect(tensors(), detectorSessions, photo, faces, faces.frame_detection_side).then(function (scan) {
      var detectedAt = performance.now();
      var regions = scan.faces.map(function (face) {
        return window.MaskFaces.cropBox(face.box, photo.width, photo.height, faces.face_margin);
      });
      var classified = regionsProbabilities(photo, regions);
      if (detected) { detected(); }
      return classified.then(function (rows) {
        var answered = scan.faces.map(function (face, index) {
          return { box: face.box, score: face.score, labels: labelsOf(rows[index]),
                   caption: caption(index + 1, rows[index]), colour: colourOf(rows[index]) };
        });
        return {
          width: photo.width, height: photo.height, device_ms: performance.now() - started,
          detect_ms: detectedAt - started, faces: answered, synthetic_note: caveatNote(answered)
        };
      });
    });
  }

  // The face table's close-ups, from the photo itself (the server's fragment has placeholders there).
  function thumbnails(html, photo, faces) {
    var holder = document.createElement("template");
    holder.innerHTML = html;
    var images = holder.content.querySelectorAll("img.face-thumb");
    Array.prototype.forEach.call(images, function (image, index) {
      var crop = faces[index] && faces[index].crop;
      if (!crop) { return; }
      var w = crop[2] - crop[0], h = crop[3] - crop[1], scale = Math.min(1, 96 / Math.max(w, h));
      var canvas = document.createElement("canvas");
      canvas.width = Math.max(1, Math.round(w * scale));
      canvas.height = Math.max(1, Math.round(h * scale));
      var context = canvas.getContext("2d");
      context.imageSmoothingQuality = "high";
      context.drawImage(photo.canvas, crop[0], crop[1], w, h, 0, 0, canvas.width, canvas.height);
      image.setAttribute("src", canvas.toDataURL("image/jpeg", 0.85));
    });
    return holder.innerHTML;
  }

  // The result fragment for a file in `mode`: probabilities here, the words from the server's template (only
  // numbers are sent: probabilities, face boxes, the photo's size).
  function classify(file, mode) {
    var started = performance.now();
    return decode(file).then(function (photo) {
      var answer = mode === "off"
        ? probabilitiesOf(photo).then(function (row) { return { probabilities: Array.prototype.slice.call(row) }; })
        : facesOf(photo);
      return answer.then(function (body) {
        stats.lastMs = performance.now() - started;
        body.mode = mode;
        var faces = body.faces || [];
        if (body.faces) {
          body.faces = faces.map(function (face) {
            return { box: face.box, score: face.score, probabilities: face.probabilities };
          });
        }
        return fetch(config.on_device.result_url, {
          method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body)
        }).then(function (response) {
          var type = response.headers.get("Content-Type") || "";
          if (type.indexOf("text/html") !== 0) { throw new Error("status " + response.status); }
          if (offline) { offline = false; sayReady(); }  // the server is back
          return response.text();
        }, function () {  // the server cannot be reached: the answer is worded here, shorter
          offline = true;
          sayReady();
          return null;
        }).then(function (html) {
          if (html === null) { return offlineAnswer(photo, body, faces); }
          html = html.split(config.on_device.preview_placeholder).join(photo.preview);
          return faces.length ? thumbnails(html, photo, faces) : html;
        });
      });
    });
  }

  // ---- while the server cannot be reached --------------------------------------------------------------------

  // presenters.photo_title and faces_summary, with the server's words (GET /api/model on_device.captions)
  function photoTitle(row) {
    var words = config.on_device.captions, labels = labelsOf(row);
    if (!labels.length) { return words.not_sure_title; }
    if (labels[0] === "-") { return words.no_face_title; }
    return labels.map(function (name) { return words.titles[name]; }).join(" and ");
  }

  function facesSummary(rows, found) {
    var words = config.on_device.captions, counts = {}, order = [];
    rows.forEach(function (row) {
      var labels = labelsOf(row);
      var phrase = !labels.length || labels[0] === "-" ? words.not_sure_phrase : words.phrases[labels[0]];
      if (!(phrase in counts)) { counts[phrase] = 0; order.push(phrase); }
      counts[phrase] += 1;
    });
    order.sort(function (a, b) {
      return ((a === words.not_sure_phrase) - (b === words.not_sure_phrase)) || (counts[b] - counts[a]);
    });
    var counted = found > rows.length ? rows.length + " of " + found + " faces classified"
      : rows.length + " face" + (rows.length !== 1 ? "s" : "");
    return counted + ": " + order.map(function (phrase) { return counts[phrase] + " " + phrase; }).join(", ");
  }

  function element(tag, className, text) {
    var made = document.createElement(tag);
    if (className) { made.className = className; }
    if (text) { made.textContent = text; }
    return made;
  }

  // The answer without the server's template: the headline, where it was worked out, why it is shorter, the
  // caveat, the photo, and each face's caption (per face: at least two faces in automatic mode, one with "every
  // face") or the photo's categories with their probabilities.
  function offlineAnswer(photo, body, faces) {
    var perFace = faces.length >= (body.mode === "on" ? 1 : 2);
    var rows = perFace ? faces.map(function (face) { return face.probabilities; }) : [body.probabilities];
    var answered = rows.map(function (row) { return { labels: labelsOf(row) }; });
    var result = element("section", "result");
    result.id = "result";
    result.setAttribute("aria-labelledby", "result-heading");
    result.setAttribute("data-mode", body.mode);
    var card = element("div", "card headline tone-neutral");
    card.appendChild(element("p", "eyebrow", "Result"));
    var heading = element("h2", null, perFace ? facesSummary(rows, body.found || faces.length) : photoTitle(rows[0]));
    heading.id = "result-heading";
    heading.setAttribute("tabindex", "-1");
    card.appendChild(heading);
    var where = element("p", "where", "Worked out on this device: the photo did not leave it.");
    where.setAttribute("data-where", "device");
    card.appendChild(where);
    card.appendChild(element("p", "because offline",
      "The server cannot be reached, so this shorter answer was put together on this device. The notes per face " +
      "and the “Why?” heat-maps come back with the server."));
    var note = caveatNote(answered);
    if (note) { card.appendChild(element("p", "drawn", note)); }
    result.appendChild(card);
    var figure = element("figure", "photo");
    var image = element("img");
    image.src = photo.preview;
    image.alt = "Your photo";
    figure.appendChild(image);
    result.appendChild(figure);
    if (perFace) {
      var list = element("ul", "offline-faces");  // each caption starts with its number
      rows.forEach(function (row, index) {
        list.appendChild(element("li", null, caption(index + 1, row)));
      });
      result.appendChild(list);
    } else {
      var table = element("table", "bars");
      config.categories.map(function (name, index) { return [name, rows[0][index]]; }).sort(function (a, b) {
        return b[1] - a[1];
      }).forEach(function (pair) {
        var tr = element("tr");
        tr.appendChild(element("th", null, config.on_device.captions.titles[pair[0]]));
        tr.appendChild(element("td", null, percentText(pair[1])));
        table.appendChild(tr);
      });
      result.appendChild(table);
    }
    return result.outerHTML;
  }

  window.MaskOnDevice = {
    // Whether a photo in `mode` is classified here: only whole photos, once ready, with the switch on.
    accepts: function (mode) {
      return state === "ready" && toggle.checked && !forcedOff && (mode === "off" || (!!detectorSessions && !!mode));
    },
    classify: classify,
    probabilities: probabilities,  // for benchmarks/ondevice.py: {probabilities, ms} of a File or Blob
    faces: faceAnswer,  // for benchmarks/ondevice.py: {probabilities, faces, found, ms} of a File or Blob
    // The live camera: whether its frames are answered here, and one frame's answer (as /api/frame's JSON)
    takesFrames: function () {
      return state === "ready" && toggle.checked && !forcedOff && !!detectorSessions && !!config.on_device.captions;
    },
    frame: frame,
    // How many live frames may be in hand at once: two where the detector and the classifier have a worker each
    // (one frame's faces searched while the last one's are classified), else one.
    framesAtOnce: function () { return stats.runsIn === "workers" && runners.length > 1 ? 2 : 1; },
    serverAnswered: function (ms) { serverMs = ms; },
    state: function () { return state; },
    stats: stats
  };

  function whenIdle() {
    if (window.requestIdleCallback) { window.requestIdleCallback(begin, { timeout: 2000 }); } else { setTimeout(begin, 200); }
  }
  if (document.readyState === "complete") { whenIdle(); } else { window.addEventListener("load", whenIdle); }
})();
