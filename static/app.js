// Progressive enhancement for the upload form: preview, drag-and-drop, disabled submit until a file
// is chosen, a "working" state, and large photos shrunk before they are sent. Without JavaScript the form
// still posts normally.
(function () {
  "use strict";
  var form = document.getElementById("upload-form");
  if (!form) { return; }
  document.documentElement.classList.add("js");
  var inputs = [document.getElementById("file-input"), document.getElementById("camera-input")];
  var submit = document.getElementById("submit-button");
  var preview = document.getElementById("preview");
  var fileName = document.getElementById("file-name");
  var working = document.getElementById("working");
  var dropZone = document.getElementById("drop-zone");
  var previewUrl = null;
  var maxSide = parseInt(form.getAttribute("data-max-side"), 10) || 0;

  function chosenFile() {
    for (var i = 0; i < inputs.length; i++) {
      if (inputs[i].files && inputs[i].files.length) { return inputs[i].files[0]; }
    }
    return null;
  }

  function showChoice() {
    var file = chosenFile();
    submit.disabled = !file;
    if (previewUrl) { URL.revokeObjectURL(previewUrl); previewUrl = null; }
    if (!file) { preview.hidden = true; fileName.textContent = ""; return; }
    fileName.textContent = file.name;
    if (file.type && file.type.indexOf("image/") === 0) {
      previewUrl = URL.createObjectURL(file);
      preview.src = previewUrl;
      preview.hidden = false;
    } else {
      preview.hidden = true;
    }
  }

  inputs.forEach(function (input, index) {
    input.addEventListener("change", function () {
      // Only one photo is sent: choosing in one picker clears the other.
      var other = inputs[1 - index];
      if (input.files.length && other.files.length) { other.value = ""; }
      showChoice();
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
    if (!files || !files.length) { return; }
    var transfer = new DataTransfer();
    transfer.items.add(files[0]);
    inputs[0].files = transfer.files;
    inputs[1].value = "";
    showChoice();
  });

  function jpegName(name) {
    return (name.replace(/\.[^.\/]*$/, "") || "photo") + ".jpg";
  }

  // A copy of a photo larger than maxSide, drawn upright (the browser applies the EXIF orientation) on white
  // and saved as JPEG: a 12-megapixel phone photo shrinks from several MB to a few hundred KB, so it uploads in
  // a fraction of the time on a mobile connection, and metadata such as the location is not sent. Resolves to
  // null (send the original) when the photo is small enough, the browser cannot decode it, or the copy would
  // not be smaller.
  function shrunkCopy(file) {
    if (!maxSide || !window.createImageBitmap || !window.DataTransfer || !window.File) {
      return Promise.resolve(null);
    }
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
      return blob && blob.size < file.size ? new File([blob], jpegName(file.name), { type: "image/jpeg" }) : null;
    }).catch(function () { return null; });
  }

  function sendInstead(file) {
    var transfer = new DataTransfer();
    transfer.items.add(file);
    inputs[0].files = transfer.files;
    inputs[1].value = "";
  }

  form.addEventListener("submit", function (event) {
    var file = chosenFile();
    event.preventDefault();
    if (!file) { return; }
    submit.disabled = true;
    submit.textContent = "Classifying…";
    form.setAttribute("aria-busy", "true");
    working.hidden = false;
    // form.submit() does not fire this handler again.
    shrunkCopy(file).then(function (smaller) {
      if (smaller) { sendInstead(smaller); }
    }).catch(function () {}).then(function () { form.submit(); });
  });

  // Coming back with the browser's back button restores the page from cache: reset the working state.
  window.addEventListener("pageshow", function () {
    submit.textContent = "Classify";
    form.removeAttribute("aria-busy");
    working.hidden = true;
    showChoice();
  });

  showChoice();
})();
