// Live camera mode (templates/_live.html): the camera's video is drawn on a canvas with each face's box and
// label over it. A frame (at most FRAME_SIDE px on its long side, JPEG) goes to /api/frame; the next one only
// after the answer to the last has arrived, so a slow server lowers the frame rate instead of piling up work.
// A 503 (server busy) skips that frame and waits before the next one; there is no retry loop. Sending pauses
// while the tab is hidden. Stop releases the camera. Frames are never stored, here or on the server. In on-device
// mode (static/ondevice.js) frames are answered in this browser instead and none is sent.
(function () {
  "use strict";
  var FRAME_SIDE = 640;
  var JPEG_QUALITY = 0.8;
  var BUSY_PAUSE_MS = 2000;  // after a 503 without Retry-After
  var section = document.getElementById("live");
  if (!section) { return; }
  var startButton = document.getElementById("live-start");
  var stopButton = document.getElementById("live-stop");
  var message = document.getElementById("live-message");
  var view = document.getElementById("live-view");
  var video = document.getElementById("live-video");
  var canvas = document.getElementById("live-canvas");
  var stats = document.getElementById("live-stats");
  var list = document.getElementById("live-faces");
  var note = document.getElementById("live-note");  // the caveat for categories learnt mostly from drawings
  var url = section.getAttribute("data-url");
  var frame = document.createElement("canvas");  // the frame sent, at most FRAME_SIDE px
  var stream = null;
  var running = false;
  var generation = 0;  // bumped by Stop: an answer that arrives after it belongs to a stopped camera
  var inFlight = false;  // a frame is being sent (server), or searched for faces (device)
  var onDevice = 0;  // frames in hand on the device: searched for faces, or having their faces classified
  var faces = [];  // the last answer, in frame pixels
  var answered = [];  // times (ms) of recent answers, for the frame rate
  var waitTimer = null;
  section.hidden = false;

  function say(text) { message.textContent = text; }

  function cameraProblem(error) {
    var name = error && error.name;
    if (name === "NotAllowedError" || name === "SecurityError") {
      return "The camera is blocked. Allow this page to use the camera (the camera icon in the address bar), then press Start again.";
    }
    if (name === "NotFoundError" || name === "OverconstrainedError") {
      return "No camera was found. Connect a camera, or use “Choose a photo” above instead.";
    }
    if (name === "NotReadableError" || name === "AbortError") {
      return "The camera is in use by another program or tab. Close it there, then press Start again.";
    }
    return "The camera could not be started (" + (error && error.message || name || "unknown reason") + ").";
  }

  function start() {
    if (!window.isSecureContext) {
      say("The live camera needs a secure connection: open this page over https (or on localhost).");
      return;
    }
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      say("This browser cannot share a camera with web pages. Use “Choose a photo” above instead.");
      return;
    }
    startButton.disabled = true;
    say("Starting the camera…");
    navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 640 }, height: { ideal: 480 } }, audio: false })
      .then(function (media) {
        stream = media;
        video.srcObject = media;
        return video.play();
      }).then(function () {
        running = true;
        inFlight = false;  // a frame of a camera stopped just before may still be in hand: its answer is dropped
        faces = [];
        note.hidden = true;
        answered = [];
        view.hidden = false;
        stopButton.hidden = false;
        startButton.hidden = true;
        say("Looking for faces…");
        requestAnimationFrame(draw);
        sendNext();
      }).catch(function (error) {
        stop();
        say(cameraProblem(error));
      }).then(function () { startButton.disabled = false; });
  }

  function stop() {
    running = false;
    generation += 1;
    if (waitTimer) { clearTimeout(waitTimer); waitTimer = null; }
    if (stream) { stream.getTracks().forEach(function (track) { track.stop(); }); }
    stream = null;
    video.srcObject = null;
    view.hidden = true;
    stopButton.hidden = true;
    startButton.hidden = false;
    say("The camera is off.");
  }

  function draw() {
    if (!running) { return; }
    var width = video.videoWidth, height = video.videoHeight;
    if (width && height) {
      if (canvas.width !== width || canvas.height !== height) { canvas.width = width; canvas.height = height; }
      var context = canvas.getContext("2d");
      context.drawImage(video, 0, 0, width, height);
      var scale = width / (frame.width || width);
      var line = Math.max(2, Math.round(width / 200));
      context.font = Math.max(12, Math.round(width / 40)) + "px system-ui, sans-serif";
      context.textBaseline = "bottom";
      faces.forEach(function (face) {
        var x0 = face.box[0] * scale, y0 = face.box[1] * scale;
        var x1 = face.box[2] * scale, y1 = face.box[3] * scale;
        context.lineWidth = line;
        context.strokeStyle = face.colour;
        context.strokeRect(x0, y0, x1 - x0, y1 - y0);
        var textWidth = context.measureText(face.caption).width + 8;
        var textHeight = parseInt(context.font, 10) + 6;
        var top = y0 >= textHeight ? y0 - textHeight : y1;
        context.fillStyle = face.colour;
        context.fillRect(x0, top, textWidth, textHeight);
        context.fillStyle = "#fff";
        context.fillText(face.caption, x0 + 4, top + textHeight - 3);
      });
    }
    requestAnimationFrame(draw);
  }

  function frameBlob() {
    var scale = Math.min(1, FRAME_SIDE / Math.max(video.videoWidth, video.videoHeight));
    frame.width = Math.max(1, Math.round(video.videoWidth * scale));
    frame.height = Math.max(1, Math.round(video.videoHeight * scale));
    frame.getContext("2d").drawImage(video, 0, 0, frame.width, frame.height);
    return new Promise(function (resolve) { frame.toBlob(resolve, "image/jpeg", JPEG_QUALITY); });
  }

  // Both figures over the last 3 seconds: answered frames per second, and the mean time from taking a frame
  // to its answer.
  function showStats(latency, where) {
    var now = performance.now();
    answered.push({ at: now, latency: latency });
    while (answered.length && now - answered[0].at > 3000) { answered.shift(); }
    var seconds = (answered[answered.length - 1].at - answered[0].at) / 1000;
    var rate = seconds > 0 ? (answered.length - 1) / seconds : 0;
    var mean = answered.reduce(function (sum, item) { return sum + item.latency; }, 0) / answered.length;
    stats.textContent = rate.toFixed(1) + " frames per second · " + Math.round(mean) + " ms per answer · worked out " +
      (where || "on the server");
  }

  function showFaces(found, caveat) {
    faces = found;
    note.textContent = caveat || "";
    note.hidden = !caveat;
    list.textContent = "";
    found.forEach(function (face) {
      var item = document.createElement("li");
      item.textContent = face.caption;
      list.appendChild(item);
    });
    say(found.length ? "" : "No face in view.");
  }

  function later(ms) {
    if (waitTimer) { return; }  // the next frame is already due
    waitTimer = setTimeout(function () { waitTimer = null; sendNext(); }, ms);
  }

  function sendNext() {
    if (!running || inFlight || waitTimer) { return; }
    if (document.hidden) { return; }  // resumed by visibilitychange
    if (!video.videoWidth) { later(100); return; }
    inFlight = true;
    var sent = performance.now();
    var current = generation;
    var device = window.MaskOnDevice;
    if (device && device.takesFrames && device.takesFrames()) {  // on-device mode: the frame never leaves
      if (onDevice >= device.framesAtOnce()) { inFlight = false; return; }  // taken when one is answered
      deviceFrame(device, sent, current);
      return;
    }
    frameBlob().then(function (blob) {
      var form = new FormData();
      form.append("file", blob, "frame.jpg");
      return fetch(url, { method: "POST", body: form });
    }).then(function (response) {
      if (current !== generation) { return { wait: 0 }; }  // stopped meanwhile: the answer is not shown
      if (response.status === 503) {  // busy: skip this frame, wait, then go on with a new one
        var retry = parseInt(response.headers.get("Retry-After"), 10);
        say("The server is busy: skipping frames for a moment.");
        return { wait: retry > 0 ? Math.min(retry, 10) * 1000 : BUSY_PAUSE_MS };
      }
      return response.json().then(function (body) {
        if (current !== generation) { return { wait: 0 }; }
        if (!response.ok) { throw new Error(body.message || "The server could not read the frame."); }
        showFaces(body.faces, body.synthetic_note);
        showStats(performance.now() - sent);
        return { wait: 0 };
      });
    }).then(function (next) {
      if (current !== generation) { return; }  // stopped meanwhile: a new start sends its own frames
      inFlight = false;
      if (next.wait) { later(next.wait); } else { sendNext(); }
    }).catch(function (error) {
      if (current !== generation) { return; }
      inFlight = false;
      say((error && error.message ? error.message : "The connection failed.") + " Trying again in a few seconds.");
      later(3000);
    });
  }

  // On-device mode (static/ondevice.js): the frame is answered in this browser, as fast as the device goes. Where
  // the device has a worker for the face detector and one for the classifier, the next frame is taken as soon as
  // this one's faces are found (two frames in hand: one searched, one classified); else once this one is
  // answered. Either way with a pause for the page to draw. Answers come back in the order the frames were taken.
  function deviceFrame(device, sent, current) {
    var scale = Math.min(1, FRAME_SIDE / Math.max(video.videoWidth, video.videoHeight));
    frame.width = Math.max(1, Math.round(video.videoWidth * scale));
    frame.height = Math.max(1, Math.round(video.videoHeight * scale));
    frame.getContext("2d", { willReadFrequently: true }).drawImage(video, 0, 0, frame.width, frame.height);
    var searching = true;
    onDevice += 1;
    function searched() {  // this frame's faces are found: the next frame may be taken
      if (!searching) { return; }
      searching = false;
      if (current !== generation) { return; }  // stopped meanwhile (a new start has its own frames)
      inFlight = false;
      if (onDevice < device.framesAtOnce()) { later(0); }
    }
    device.frame(frame, searched).then(function (body) {
      onDevice -= 1;
      searched();
      if (current === generation) {  // else the camera was stopped meanwhile: the answer is not shown
        showFaces(body.faces, body.synthetic_note);
        showStats(performance.now() - sent, "on this device");
      }
      if (running && !inFlight) { later(0); }
    }).catch(function (error) {
      onDevice -= 1;
      searching = false;
      if (current !== generation) {
        if (running && !inFlight) { later(0); }
        return;
      }
      inFlight = false;
      say("This frame could not be classified on this device (" + (error && error.message || "unknown reason") +
          "). Trying again in a moment.");
      if (waitTimer) { clearTimeout(waitTimer); }
      waitTimer = null;
      later(1000);
    });
  }

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) { sendNext(); }
  });
  window.addEventListener("pagehide", stop);
  startButton.addEventListener("click", start);
  stopButton.addEventListener("click", stop);
})();
