// The "Why?" button of a result (templates/_explain.html): the page's preview of the photo (the photo as the
// server decoded it, at most 800 px) is drawn on a canvas, sent as a JPEG to /api/explain with the category the
// result names first, and the heat-map overlay that comes back is shown with a legend in plain words. Nothing
// is stored: the photo goes from the page to the server's memory and back as an image.
(function () {
  "use strict";
  var section = document.getElementById("explain");
  var photo = document.querySelector(".photo img");
  if (!section || !photo || !window.fetch || !window.FormData) { return; }
  var button = document.getElementById("why-button");
  var status = document.getElementById("why-status");
  var figure = document.getElementById("why-figure");
  var image = document.getElementById("why-image");
  var legend = document.getElementById("why-legend");
  section.hidden = false;

  function photoBlob() {
    // A data: image does not taint the canvas, and drawing it avoids fetch(), which the page's CSP limits to 'self'.
    var canvas = document.createElement("canvas");
    canvas.width = photo.naturalWidth;
    canvas.height = photo.naturalHeight;
    canvas.getContext("2d").drawImage(photo, 0, 0);
    return new Promise(function (resolve) { canvas.toBlob(resolve, "image/jpeg", 0.92); });
  }

  function say(text) { status.textContent = text; }

  button.addEventListener("click", function () {
    button.disabled = true;
    say("Working out which parts of the photo mattered…");
    photoBlob().then(function (blob) {
      var form = new FormData();
      form.append("file", blob, "photo.jpg");
      var url = section.getAttribute("data-url") + "?category=" + encodeURIComponent(section.getAttribute("data-category"));
      return fetch(url, { method: "POST", body: form });
    }).then(function (response) {
      return response.json().then(function (body) { return { ok: response.ok, body: body }; });
    }).then(function (answer) {
      if (!answer.ok) { throw new Error(answer.body.message || "The heat-map could not be made."); }
      var body = answer.body;
      image.src = body.overlay;
      legend.textContent = body.legend + " The model gave it " + Math.round(body.probability * 100) + " %." +
        (body.method === "occlusion" ? " (Measured by hiding one part of the photo at a time.)" : "") +
        " Dimmed parts were cut off: the model did not see them.";
      figure.hidden = false;
      say("");
    }).catch(function (error) {
      say(error.message || "The heat-map could not be made. Please try again.");
    }).then(function () { button.disabled = false; });
  });
})();
