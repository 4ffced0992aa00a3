// Progressive enhancement for the upload page. Without JavaScript the form still posts normally (to /#result) and
// the examples are submit buttons. With it:
// - the photo comes from the picker, the phone's camera, a drop, a paste, a desktop webcam snapshot or an example;
// - large photos are shrunk before they are sent;
// - the result is fetched from POST /result (an HTML fragment) and put in place without a reload, with a progress
//   state counting the seconds; focus moves to the result's heading and the answer is announced;
// - the same photo can be classified again in another mode;
// - the boxes on the photo and the rows of the face table highlight each other.
(function () {
  "use strict";
  var form = document.getElementById("upload-form");
  if (!form) { return; }
  document.documentElement.classList.add("js");
  form.noValidate = true; // the photo may come from a paste, the webcam or an example, not the file input

  var fileInput = document.getElementById("file-input");
  var cameraInput = document.getElementById("camera-input");
  var cameraLabel = document.getElementById("camera-label");
  var webcamButton = document.getElementById("webcam-button");
  var webcam = document.getElementById("webcam");
  var video = document.getElementById("webcam-video");
  var submit = document.getElementById("submit-button");
  var preview = document.getElementById("preview");
  var fileName = document.getElementById("file-name");
  var dropZone = document.getElementById("drop-zone");
  var resultArea = document.getElementById("result-area");
  var progress = document.getElementById("progress");
  var elapsed = document.getElementById("elapsed");
  var announcer = document.getElementById("announcer");
  var maxSide = parseInt(form.getAttribute("data-max-side"), 10) || 0;
  var fragmentUrl = form.getAttribute("data-fragment");
  var REQUEST_TIMEOUT_MS = 90000; // longer than the server's own limits (upload 60 s, queue 10 s, faces 8 s)

  var current = null; // the photo to classify: a File
  var previewUrl = null;
  var busy = false;
  var stream = null;

  // ---- choosing a photo -------------------------------------------------------------------------------------

  function choose(file, label) {
    current = file;
    if (previewUrl) { URL.revokeObjectURL(previewUrl); previewUrl = null; }
    submit.disabled = !file || busy;
    if (!file) { preview.hidden = true; fileName.textContent = ""; return; }
    fileName.textContent = label || file.name;
    if (file.type && file.type.indexOf("image/") === 0) {
      previewUrl = URL.createObjectURL(file);
      preview.src = previewUrl;
      preview.hidden = false;
    } else {
      preview.hidden = true;
    }
  }

  [fileInput, cameraInput].forEach(function (input) {
    input.addEventListener("change", function () {
      if (input.files && input.files.length) { choose(input.files[0]); }
    });
  });

  ["dragenter", "dragover"].forEach(function (type) {
    document.addEventListener(type, function (event) {
      event.preventDefault();
      dropZone.classList.add("dragging");
    });
  });
  ["dragleave", "drop"].forEach(function (type) {
    document.addEventListener(type, function (event) {
      event.preventDefault();
      dropZone.classList.remove("dragging");
    });
  });
  document.addEventListener("drop", function (event) {
    var files = event.dataTransfer && event.dataTransfer.files;
    if (files && files.length) { choose(files[0]); }
  });

  // Paste (Ctrl+V) an image copied from another page or a screenshot tool; text pastes are left alone.
  document.addEventListener("paste", function (event) {
    var items = (event.clipboardData && event.clipboardData.files) || [];
    for (var i = 0; i < items.length; i++) {
      if (items[i].type.indexOf("image/") === 0) {
        event.preventDefault();
        choose(items[i], "Pasted image");
        return;
      }
    }
  });

  // ---- the camera: a phone keeps its own camera input; a desktop gets a webcam snapshot ---------------------

  var touch = window.matchMedia && window.matchMedia("(pointer: coarse)").matches;
  var canWebcam = !!(navigator.mediaDevices && navigator.mediaDevices.getUserMedia);
  if (touch) {
    cameraInput.disabled = false;
    cameraInput.hidden = false;
    cameraLabel.hidden = false;
  } else if (canWebcam) {
    webcamButton.hidden = false;
  }

  function stopWebcam() {
    if (stream) { stream.getTracks().forEach(function (track) { track.stop(); }); stream = null; }
    video.srcObject = null;
    webcam.hidden = true;
  }

  function webcamFailed(error) {
    stopWebcam();
    var denied = error && (error.name === "NotAllowedError" || error.name === "SecurityError");
    fileName.textContent = (denied ? "The camera was not allowed." : "No camera could be opened.") +
      " Choose a photo instead.";
    fileInput.focus();
  }

  webcamButton.addEventListener("click", function () {
    navigator.mediaDevices.getUserMedia({ video: { facingMode: "user" }, audio: false }).then(function (media) {
      stream = media;
      video.srcObject = media;
      webcam.hidden = false;
      document.getElementById("webcam-snap").focus();
    }).catch(webcamFailed);
  });
  document.getElementById("webcam-cancel").addEventListener("click", function () {
    stopWebcam();
    webcamButton.focus();
  });
  document.getElementById("webcam-snap").addEventListener("click", function () {
    if (!video.videoWidth) { return; } // no frame yet
    var canvas = document.createElement("canvas");
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
    canvas.getContext("2d").drawImage(video, 0, 0);
    canvas.toBlob(function (blob) {
      stopWebcam();
      if (!blob) { webcamFailed(null); return; }
      choose(new File([blob], "snapshot.jpg", { type: "image/jpeg" }), "Snapshot from the camera");
      submit.focus();
    }, "image/jpeg", 0.92);
  });

  // ---- sending it -------------------------------------------------------------------------------------------

  function jpegName(name) {
    return (name.replace(/\.[^.\/]*$/, "") || "photo") + ".jpg";
  }

  // A copy of a photo larger than maxSide, drawn upright (the browser applies the EXIF orientation) on white
  // and saved as JPEG: a 12-megapixel phone photo shrinks from several MB to a few hundred KB, so it uploads in
  // a fraction of the time on a mobile connection, and metadata such as the location is not sent. Resolves to
  // the file itself when it is small enough, the browser cannot decode it, or the copy would not be smaller.
  function shrunk(file) {
    if (!maxSide || !window.createImageBitmap) { return Promise.resolve(file); }
    return createImageBitmap(file, { imageOrientation: "from-image" }).then(function (bitmap) {
      var scale = maxSide / Math.max(bitmap.width, bitmap.height);
      if (scale >= 1) { bitmap.close(); return null; }
      var canvas = document.createElement("canvas");
      canvas.width = Math.max(1, Math.round(bitmap.width * scale));
      canvas.height = Math.max(1, Math.round(bitmap.height * scale));
      var context = canvas.getContext("2d");
      context.fillStyle = "#fff";
      context.fillRect(0, 0, canvas.width, canvas.height);
      context.imageSmoothingQuality = "high";
      context.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
      bitmap.close();
      return new Promise(function (resolve) { canvas.toBlob(resolve, "image/jpeg", 0.92); });
    }).then(function (blob) {
      return blob && blob.size < file.size ? new File([blob], jpegName(file.name), { type: "image/jpeg" }) : file;
    }).catch(function () { return file; });
  }

  function chosenMode() {
    var checked = form.querySelector('input[name="faces"]:checked');
    return checked ? checked.value : null;
  }

  function setMode(value) {
    var radio = form.querySelector('input[name="faces"][value="' + value + '"]');
    if (radio) { radio.checked = true; }
  }

  var timer = null;
  function working(on) {
    busy = on;
    submit.disabled = on || !current;
    submit.textContent = on ? "Classifying…" : "Classify";
    if (on) { form.setAttribute("aria-busy", "true"); } else { form.removeAttribute("aria-busy"); }
    progress.hidden = !on;
    clearInterval(timer);
    if (on) {
      var started = Date.now();
      elapsed.textContent = "0 s";
      timer = setInterval(function () {
        elapsed.textContent = Math.floor((Date.now() - started) / 1000) + " s";
      }, 250);
      resultArea.hidden = true;
      progress.scrollIntoView({ block: "start" });
    } else {
      resultArea.hidden = false;
    }
  }

  function show(html) {
    resultArea.innerHTML = html;
    working(false);
    var heading = document.getElementById("result-heading");
    var result = document.getElementById("result");
    if (result) { result.scrollIntoView({ block: "start" }); }
    if (heading) {
      heading.focus({ preventScroll: true });
      announcer.textContent = "";
      // a fresh text node a moment later, so that screen readers announce the same answer twice in a row too
      setTimeout(function () { announcer.textContent = heading.textContent.trim(); }, 50);
    }
    linkFaces();
    document.dispatchEvent(new CustomEvent("maskpage:result")); // e.g. static/explain.js sets up its "Why?" button
  }

  function failure(title, message) {
    var section = document.createElement("section");
    section.id = "result";
    section.className = "result";
    section.setAttribute("aria-labelledby", "result-heading");
    section.innerHTML = '<div class="card error" role="alert"><h2 id="result-heading" tabindex="-1"></h2><p></p>' +
      '<p class="actions"><button type="button" class="button primary" data-retry>Try again</button> ' +
      '<a class="button secondary try-another" href="#upload-form">Try another photo</a></p></div>';
    section.querySelector("h2").textContent = title;
    section.querySelector("p").textContent = message;
    show(section.outerHTML);
  }

  // On-device mode (static/ondevice.js) answers the photos it can here, without sending them; anything else, or
  // anything it fails on, goes to the server.
  function classify(file, mode) {
    if (!file || busy) { return; }
    working(true);
    var device = window.MaskOnDevice;
    if (device && device.accepts(mode)) {
      device.classify(file, mode).then(show, function () { classifyOnServer(file, mode); });
      return;
    }
    classifyOnServer(file, mode);
  }

  function classifyOnServer(file, mode) {
    var sent = Date.now();
    var controller = window.AbortController ? new AbortController() : null;
    var timeout = setTimeout(function () { if (controller) { controller.abort(); } }, REQUEST_TIMEOUT_MS);
    shrunk(file).then(function (toSend) {
      var body = new FormData();
      body.append("file", toSend, toSend.name || "photo.jpg");
      if (mode) { body.append("faces", mode); }
      return fetch(fragmentUrl, { method: "POST", body: body, signal: controller ? controller.signal : undefined });
    }).then(function (response) {
      var type = response.headers.get("Content-Type") || "";
      if (type.indexOf("text/html") === 0) {
        if (window.MaskOnDevice) { window.MaskOnDevice.serverAnswered(Date.now() - sent); }
        return response.text().then(show);
      }
      // not the app's own answer (a proxy's error page, the server's JSON deadline reply): say so plainly
      failure("The server did not answer properly",
              "Something went wrong on the way (status " + response.status + "). Please try again in a moment.");
    }).catch(function (error) {
      if (error && error.name === "AbortError") {
        failure("This is taking too long", "The server did not answer within " + REQUEST_TIMEOUT_MS / 1000 +
                " seconds. Please try again, or try a smaller photo.");
      } else {
        failure("The server could not be reached", "Check the connection and try again.");
      }
    }).then(function () { clearTimeout(timeout); });
  }

  // Which button sent the form: event.submitter, and for browsers without it (Safari before 15.4) the last click.
  var clicked = null;
  form.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("button[type=submit]");
    if (button) { clicked = button; }
  });

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var sender = event.submitter || clicked;
    clicked = null;
    var example = sender && sender.name === "example" ? sender : null;
    if (example) {
      // one click classifies an example: fetched as a file, it becomes the current photo like any other
      fetch(example.getAttribute("data-src")).then(function (response) { return response.blob(); }).then(function (blob) {
        var caption = example.textContent.trim();
        choose(new File([blob], example.value + ".jpg", { type: blob.type || "image/jpeg" }), "Example: " + caption);
        classify(current, chosenMode());
      }).catch(function () { failure("The example could not be loaded", "Please try again."); });
      return;
    }
    if (!current) {
      fileName.textContent = "Choose a photo first.";
      fileInput.focus();
      return;
    }
    classify(current, chosenMode());
  });

  // Buttons inside the result: try another photo, retry, and the same photo again in another mode.
  resultArea.addEventListener("click", function (event) {
    var target = event.target.closest("a, button");
    if (!target) { return; }
    if (target.classList.contains("try-another")) {
      event.preventDefault();
      form.scrollIntoView({ block: "start" });
      fileInput.focus({ preventScroll: true });
    } else if (target.hasAttribute("data-again")) {
      setMode(target.getAttribute("data-again"));
      classify(current, chosenMode());
    } else if (target.hasAttribute("data-retry")) {
      classify(current, chosenMode());
    }
  });

  // ---- the boxes on the photo and the rows of the table highlight each other --------------------------------

  function highlight(number, scrollTo) {
    var rows = resultArea.querySelectorAll("[data-face]");
    for (var i = 0; i < rows.length; i++) {
      rows[i].classList.toggle("highlight", rows[i].getAttribute("data-face") === number);
    }
    if (scrollTo) { scrollTo.scrollIntoView({ block: "nearest" }); }
  }

  function linkFaces() {
    var items = resultArea.querySelectorAll(".face-box, .face-row");
    Array.prototype.forEach.call(items, function (item) {
      var number = item.getAttribute("data-face");
      var isBox = item.classList.contains("face-box");
      item.addEventListener("mouseenter", function () { highlight(number); });
      item.addEventListener("focusin", function () { highlight(number); });
      item.addEventListener("click", function (event) {
        event.preventDefault(); // the links' jump is for pages without the script; here both stay in view
        var other = document.getElementById((isBox ? "face-row-" : "face-box-") + number);
        highlight(number, isBox ? other : document.querySelector(".photo-frame"));
      });
    });
  }

  // For other ways in (a live camera, say, in its own script): hand the page a photo, and classify it.
  window.MaskPage = {
    usePhoto: function (file, label) { choose(file, label); },
    classify: function () { classify(current, chosenMode()); }
  };

  // Coming back with the browser's back button restores the page from cache: reset the working state.
  window.addEventListener("pageshow", function () {
    working(false);
    if (!current && fileInput.files && fileInput.files.length) { choose(fileInput.files[0]); } else { choose(current); }
  });

  choose(null);
  linkFaces();
  var first = document.getElementById("result-heading");
  if (first && location.hash === "#result") { first.focus({ preventScroll: true }); }
})();
