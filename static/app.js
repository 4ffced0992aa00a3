// Progressive enhancement for the upload form: preview, drag-and-drop, disabled submit until a file
// is chosen, and a "working" state. Without JavaScript the form still posts normally.
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

  form.addEventListener("submit", function (event) {
    if (!chosenFile()) { event.preventDefault(); return; }
    submit.disabled = true;
    submit.textContent = "Classifying…";
    form.setAttribute("aria-busy", "true");
    working.hidden = false;
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
