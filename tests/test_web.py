"""The page and the JSON API against a real exported learner."""

from __future__ import annotations

import io
import re
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image, ImageOps

from helpers import encode, png_claiming, sideways_jpeg, upload
from datasets import face_like_image
from maskclassifier.images import load_image
from maskclassifier.model import Prediction
from maskclassifier.web.presenters import prediction_message


def test_form_page(client):
    page = client.get("/").get_data(as_text=True)
    assert re.search(r'<input[^>]*type="file"[^>]*name="file"[^>]*accept="image/\*"', page)
    assert 'capture="environment"' in page
    assert 'enctype="multipart/form-data"' in page
    assert not re.search(r'(src|href)="(https?:)?//', page), "no CDN or external assets: the page works offline"
    for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', page):
        assert client.get(asset).status_code == 200


def test_submit_button_is_enabled_without_javascript(client):
    page = client.get("/").get_data(as_text=True)
    button = re.search(r"<button[^>]*>", page).group(0)
    assert "disabled" not in button  # static/app.js disables it until a file is chosen


def test_api_predict_returns_every_probability_and_sorted_labels(make_app, face_jpeg):
    client = make_app(threshold=0.01).test_client()
    response = client.post("/api/predict", data=upload(face_jpeg))
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == {"labels", "probabilities", "threshold", "message"}
    assert list(body["probabilities"]) == ["-", "Cloth", "Gas", "KN95", "Medical", "No_mask!", "Shield"]
    assert all(0 <= p <= 1 for p in body["probabilities"].values())
    assert body["threshold"] == 0.01
    probabilities = [body["probabilities"][label] for label in body["labels"]]
    assert body["labels"] and probabilities == sorted(probabilities, reverse=True)
    assert set(body["labels"]) == {name for name, p in body["probabilities"].items() if p > 0.01}


def test_api_uses_the_apps_threshold_not_fastais(make_app, face_jpeg):
    body = make_app(threshold=0.99).test_client().post("/api/predict", data=upload(face_jpeg)).get_json()
    assert max(body["probabilities"].values()) < 0.99  # a one-epoch toy model is never that sure
    assert body["labels"] == []
    assert "not confident" in body["message"]


def test_api_matches_fastais_own_probabilities(app, face_jpeg):
    """The app's preprocessing is the learner's: same numbers as learn.predict on the same image."""
    from fastai.vision.core import PILImage

    learner = app.extensions["maskclassifier"].backend.learner
    image = Image.open(io.BytesIO(face_jpeg)).convert("RGB")
    with learner.no_bar():
        _, _, expected = learner.predict(PILImage.create(image))
    body = app.test_client().post("/api/predict", data=upload(face_jpeg)).get_json()
    np.testing.assert_allclose(list(body["probabilities"].values()), expected.numpy(), atol=1e-5)


def test_sideways_phone_photo_is_classified_upright(client):
    upright = face_like_image(["KN95"], seed=3, size=(90, 140))
    straight = client.post("/api/predict", data=upload(encode(upright, "JPEG", quality=95))).get_json()
    rotated = client.post("/api/predict", data=upload(sideways_jpeg(upright))).get_json()
    for name, p in straight["probabilities"].items():
        assert rotated["probabilities"][name] == pytest.approx(p, abs=0.02)


def test_form_shows_result_chips_and_bars(make_app, face_jpeg):
    page = make_app(threshold=0.01).test_client().post("/", data=upload(face_jpeg)).get_data(as_text=True)
    assert 'src="data:image/jpeg;base64,' in page  # the uploaded photo, inline: nothing stored
    assert page.count('class="chip ') >= 1
    assert page.count("<svg class=\"bar\"") == 7
    assert page.count('class="threshold" x1="1.00"') == 7  # the threshold is marked on every bar


def test_form_says_not_confident_and_still_shows_bars(make_app, face_jpeg):
    page = make_app(threshold=0.99).test_client().post("/", data=upload(face_jpeg)).get_data(as_text=True)
    assert "not confident enough about any category" in page
    assert "front-facing photo" in page
    assert page.count("<svg class=\"bar\"") == 7
    assert 'class="chip ' not in page


@pytest.mark.parametrize("labels,expected", [
    ([], "not confident enough"),
    (["-"], "does not look like a face or mask photo"),
    (["KN95", "Shield"], "Recognised: KN95 / N95 respirator, Face shield."),
    (["Medical"], "Surgical / medical mask"),
    (["No_mask!"], "No mask on the face"),
])
def test_prediction_messages(labels, expected):
    prediction = Prediction({name: 0.9 if name in labels else 0.1 for name in ["-", "KN95", "Medical", "No_mask!", "Shield"]},
                            labels, 0.8)
    assert expected in prediction_message(prediction)


def test_model_endpoint(client, app):
    body = client.get("/api/model").get_json()
    assert body["categories"] == ["-", "Cloth", "Gas", "KN95", "Medical", "No_mask!", "Shield"]
    assert body["threshold"] == 0.5 and body["tta"] == "none"
    assert body["architecture"] == "resnet18"
    assert body["input_size"] == 64
    assert re.fullmatch(r"[0-9a-f]{64}", body["sha256"])


def test_a_big_jpeg_gets_the_same_answer_on_every_path(app, client):
    """The API, faces=off, faces=auto without a face and the page all decode the photo whole, as fastai does."""
    backend = app.extensions["maskclassifier"].backend
    jpeg = encode(face_like_image(["KN95"], seed=3, size=(1600, 1200)), "JPEG", quality=95)
    whole = backend.probabilities([load_image(jpeg)])[0]
    assert load_image(jpeg).size == (1600, 1200)
    for query in ("", "?faces=off"):
        answer = client.post("/api/predict" + query, data=upload(jpeg)).get_json()["probabilities"]
        assert list(answer.values()) == pytest.approx(whole, abs=1e-6)


def test_mask_tta_flip_answers_with_the_mean_of_the_photo_and_its_mirror_image(make_app):
    app = make_app(tta="flip")
    backend = app.extensions["maskclassifier"].backend
    photo = face_like_image(["Cloth"], seed=5, size=(96, 96))
    body = app.test_client().post("/api/predict", data=upload(encode(photo, "PNG"))).get_json()
    assert app.test_client().get("/api/model").get_json()["tta"] == "flip"
    mean = (backend.probabilities([photo]) + backend.probabilities([ImageOps.mirror(photo)])) / 2
    assert list(body["probabilities"].values()) == pytest.approx(mean[0], abs=1e-5)
    assert list(body["probabilities"].values()) != pytest.approx(backend.probabilities([photo])[0], abs=1e-5)


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.get_json() == {"status": "ok"}


@pytest.mark.parametrize("data,status,code", [
    ({}, 400, "no_file"),
    ({"photo": (io.BytesIO(b"x"), "a.jpg")}, 400, "no_file"),
    (upload(b""), 400, "empty_file"),
    (upload(b"this is not an image"), 400, "not_an_image"),
    (upload(encode(Image.new("RGB", (300, 300)), "PNG")[:300]), 400, "corrupt_image"),
    (upload(png_claiming(30000, 30000)), 400, "image_too_large"),
    (upload(b"<svg xmlns='http://www.w3.org/2000/svg'/>", "x.svg", "image/svg+xml"), 415, "unsupported_format"),
    (upload(b"%PDF-1.7\n", "x.pdf", "application/pdf"), 415, "unsupported_format"),
    (upload(b"\xff\xd8" + b"\0" * (3 * 1024 * 1024)), 413, "file_too_large"),
])
def test_bad_uploads_get_clear_errors_on_api_and_form(client, data, status, code):
    copy = {key: (value[0].getvalue(), *value[1:]) for key, value in data.items()}

    def fresh():
        return {key: (io.BytesIO(value[0]), *value[1:]) for key, value in copy.items()}

    api = client.post("/api/predict", data=fresh())
    assert api.status_code == status
    assert api.get_json()["error"] == code
    message = api.get_json()["message"]
    assert message and "Traceback" not in message
    form = client.post("/", data=fresh())
    assert form.status_code == status
    page = form.get_data(as_text=True)
    assert 'role="alert"' in page and 'id="upload-form"' in page
    assert message.split(".")[0].replace("'", "&#39;") in page


def test_two_files_at_once_are_refused(client, face_jpeg):
    data = {"file": [(io.BytesIO(face_jpeg), "a.jpg"), (io.BytesIO(face_jpeg), "b.jpg")]}
    response = client.post("/api/predict", data=data)
    assert response.status_code == 400 and response.get_json()["error"] == "too_many_files"


def test_an_unused_second_picker_is_ignored(client, face_jpeg):
    """The form has two pickers named `file` (library, camera); the browser sends the unused one empty."""
    data = {"file": [(io.BytesIO(face_jpeg), "a.jpg"), (io.BytesIO(b""), "")]}
    assert client.post("/", data=data).status_code == 200


def test_unknown_page_and_method(client):
    assert client.get("/nope").status_code == 404
    response = client.get("/api/predict")
    assert response.status_code == 405 and response.get_json()["error"] == "method_not_allowed"


def test_answers_in_synthetic_categories_carry_their_caveat(make_app):
    """The categories training marked synthetic (sidecar) are listed by /api/model, and an answer naming one
    carries `synthetic_note`; an answer naming none has no note."""
    app = make_app(threshold=0.01)  # every category passes: the answer names them all
    classifier = app.extensions["maskclassifier"]
    client = app.test_client()
    photo = encode(face_like_image(["Medical"], seed=3, size=(120, 160)))
    assert "synthetic_categories" not in client.get("/api/model").get_json()
    assert "synthetic_note" not in client.post("/api/predict", data=upload(photo)).get_json()

    classifier.sidecar = replace(classifier.sidecar, training={"dataset": {"synthetic_categories": ["Shield", "Gas"]}})
    model = client.get("/api/model").get_json()
    assert model["synthetic_categories"] == ["Gas", "Shield"]  # vocab order
    assert "drawn" in model["synthetic_note"] and "less reliable on real photos" in model["synthetic_note"]
    for query in ("", "?faces=auto"):
        body = client.post(f"/api/predict{query}", data=upload(photo)).get_json()
        assert body["synthetic_note"].startswith("Gas and Shield were learned from drawn"), query

    strict = make_app(threshold=0.999)
    strict.extensions["maskclassifier"].sidecar = classifier.sidecar
    assert "synthetic_note" not in strict.test_client().post("/api/predict", data=upload(photo)).get_json()
