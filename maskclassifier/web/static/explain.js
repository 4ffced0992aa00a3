// The "Why?" button of a result (templates/_explain.html): the page's preview of the photo (the photo as the
// server decoded it, at most 800 px) is drawn on a canvas, sent as a JPEG to /api/explain with the category the
// result names first, and the heat-map overlay that comes back is shown with a legend in plain words. Nothing
// is stored: the photo goes from the page to the server's memory and back as an image.
(function () {
  "use strict";
  // Set up on load (a result rendered with the page) and again for each result static/app.js puts in place.
  document.addEventListener("maskpage:result", setUp);
  setUp();

  function setUp() {
    var section = document.getElementById("explain");
    var photo = document.querySelector(".photo img, .photo-frame img");
    if (!section || !photo || !window.fetch || !window.FormData) { return; }
    var button = document.getElementById("why-button");
    var status = document.getElementById("why-status");
    var figure = document.getElementById("why-figure");
    var image = document.getElementById("why-image");
    var legend = document.getElementById("why-legend");
    var faceList = document.getElementById("why-faces");
    var sentSize = [0, 0];
    // "faces": the result shows each face, so each face is explained for its own most probable category;
    // "close_up": the answer combined the whole photo and the face's close-up, so both are explained.
    var faceMode = section.getAttribute("data-faces");
    section.hidden = false;

    function photoBlob() {
      // A data: image does not taint the canvas, and drawing it avoids fetch(), which the page's CSP limits to 'self'.
      var canvas = document.createElement("canvas");
      canvas.width = photo.naturalWidth;
      canvas.height = photo.naturalHeight;
      canvas.getContext("2d").drawImage(photo, 0, 0);
      sentSize = [canvas.width, canvas.height];
      return new Promise(function (resolve) { canvas.toBlob(resolve, "image/jpeg", 0.92); });
    }

    function say(text) { status.textContent = text; }

    // Per-face results: each face's crop with its own heat-map, for the category most probable for that face.
    function showFaces(faces) {
      faceList.textContent = "";
      faces.forEach(function (face, index) {
        var item = document.createElement("li");
        var picture = document.createElement("img");
        picture.src = face.overlay;
        picture.alt = "Face " + (index + 1) + " with a heat-map";
        var caption = document.createElement("p");
        caption.textContent = "Face " + (index + 1) + ": " + face.legend + " For this face the model gave it " +
          Math.round(face.probability * 100) + " %.";
        item.appendChild(picture);
        item.appendChild(caption);
        faceList.appendChild(item);
      });
      faceList.hidden = !faces.length;
    }

    button.addEventListener("click", function () {
      button.disabled = true;
      say("Working out which parts of the photo mattered…");
      photoBlob().then(function (blob) {
        var form = new FormData();
        form.append("file", blob, "photo.jpg");
        var url = section.getAttribute("data-url") + "?";
        if (faceMode !== "faces") { url += "category=" + encodeURIComponent(section.getAttribute("data-category")) + "&"; }
        if (faceMode) { url += "faces=on"; }
        return fetch(url, { method: "POST", body: form });
      }).then(function (response) {
        return response.json().then(function (body) { return { ok: response.ok, body: body }; });
      }).then(function (answer) {
        if (!answer.ok) { throw new Error(answer.body.message || "The heat-map could not be made."); }
        var body = answer.body;
        image.src = body.overlay;
        var cropped = body.box[0] > 0 || body.box[1] > 0 || body.box[2] < sentSize[0] || body.box[3] < sentSize[1];
        legend.textContent = body.legend + " For the whole photo the model gave it " +
          Math.round(body.probability * 100) + " %." +
          (body.method === "occlusion" ? " (Measured by hiding one part of the photo at a time.)" : "") +
          (cropped ? " The greyed-out edges were cut off: the model sees a centred square." : "");
        figure.hidden = false;
        showFaces(body.faces || []);
        say("");
      }).catch(function (error) {
        say(error.message || "The heat-map could not be made. Please try again.");
      }).then(function () { button.disabled = false; });
    });
  }
})();
