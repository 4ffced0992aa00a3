"""The "Why?" heat-maps: they point at the pixels that decided a label, and POST /api/explain serves them."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from skimage import data

from datasets import PATCH_SIZE, face_like_image, patch_cell_box, patch_image
from helpers import FindsBrightFaces, encode, underexposed, upload
from maskclassifier.classifier.classifier import load_classifier
from maskclassifier.classifier.explain import Explanation, explain, overlay

# A red and a blue patch in two different cells of each image: the map of "red" must sit on the red patch and
# the map of "blue" on the blue one, so a map that highlights any object, or the centre, cannot pass.
PAIRS = [(cell, (cell + 4) % 9) for cell in range(9)]


def mass_inside(explanation: Explanation, box: tuple[int, int, int, int], size: tuple[int, int]) -> float:
    """The share of the heat-map's mass (upsampled over the part of the image the model saw) inside `box`."""
    x0, y0, x1, y1 = explanation.box
    values = np.asarray(Image.fromarray(explanation.grid.astype(np.float32), mode="F")
                        .resize((x1 - x0, y1 - y0), Image.Resampling.BILINEAR))
    canvas = np.zeros((size[1], size[0]), dtype=np.float32)
    canvas[y0:y1, x0:x1] = values
    total = canvas.sum()
    return float(canvas[box[1]:box[3], box[0]:box[2]].sum() / total) if total > 0 else 0.0


def decorative(grid: np.ndarray, size: int = PATCH_SIZE) -> Explanation:
    return Explanation("red", 1.0, "none", grid.astype(np.float32), (0, 0, size, size))


@pytest.fixture(scope="module")
def patch_onnx(patch_model) -> str:
    from maskclassifier.modelfiles.export_onnx import export

    export(patch_model)
    return str(patch_model.with_suffix(".onnx"))


@pytest.mark.parametrize("backend", ["fastai", "onnx"])
def test_the_map_falls_on_the_patch_that_decided_the_label(backend, patch_model, request):
    path = patch_model if backend == "fastai" else request.getfixturevalue("patch_onnx")
    classifier = load_classifier(path, threshold=0.5, torch_threads=1)
    size = (PATCH_SIZE, PATCH_SIZE)
    shares = {}
    for red, blue in PAIRS:
        image = patch_image({"red": red, "blue": blue}, seed=1000 + red)
        for label, cell in (("red", red), ("blue", blue)):
            explanation = explain(classifier, image, label)
            assert explanation.category == label and explanation.probability > 0.5, "the learner learnt its task"
            assert explanation.method == ("grad-cam" if backend == "fastai" else "occlusion")
            assert explanation.grid.min() >= 0 and explanation.grid.max() == pytest.approx(1)
            shares[(red, blue, label)] = mass_inside(explanation, patch_cell_box(cell), size)
    assert min(shares.values()) >= 0.5, shares
    # The same measure fails maps that show nothing: uniform, or a blob in the centre of the image.
    assert mass_inside(decorative(np.ones((12, 12))), patch_cell_box(0), size) < 0.5
    centre = np.zeros((12, 12))
    centre[4:8, 4:8] = 1
    assert mass_inside(decorative(centre), patch_cell_box(0), size) < 0.5


def test_the_top_category_is_explained_by_default(patch_model):
    classifier = load_classifier(patch_model, threshold=0.5, torch_threads=1)
    image = patch_image({"blue": 2}, seed=5)
    explanation = explain(classifier, image)
    probabilities = classifier.predict(image).probabilities
    assert explanation.category == max(probabilities, key=probabilities.get) == "blue"
    assert explanation.probability == pytest.approx(probabilities["blue"], abs=1e-4)
    assert explanation.title == "blue" and explanation.legend == "Brighter = mattered more for 'blue'."


def test_the_overlay_covers_only_what_the_model_saw(patch_model):
    """A 1.8:1 photo is centre-cropped by the item Resize: the parts cut off are dimmed, not coloured."""
    classifier = load_classifier(patch_model, threshold=0.5, torch_threads=1)
    wide = Image.new("RGB", (180, 100), (255, 255, 255))
    wide.paste(patch_image({"red": 4}, seed=3), (42, 2))
    explanation = explain(classifier, wide, "red")
    assert explanation.box == (40, 0, 140, 100)
    picture = overlay(wide, explanation)
    assert picture.size == wide.size
    assert picture.getpixel((10, 50)) == (89, 89, 89), "outside the crop: the white photo dimmed"
    assert picture.getpixel((90, 50)) != picture.getpixel((10, 50))
    classifier.backend.direct = None  # a learner served through fastai's own DataLoader crops the same way
    assert explain(classifier, wide, "red").box == (40, 0, 140, 100)


def test_api_explains_the_top_category_as_json(client, face_jpeg):
    response = client.post("/api/explain", data=upload(face_jpeg))
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    predicted = client.post("/api/predict", data=upload(face_jpeg)).get_json()["probabilities"]
    assert body["category"] == max(predicted, key=predicted.get)
    assert body["probability"] == pytest.approx(predicted[body["category"]], abs=1e-4)
    assert body["method"] == "grad-cam"
    grid = np.array(body["grid"])
    assert grid.ndim == 2 and grid.shape[0] >= 2 and grid.min() >= 0 and grid.max() <= 1
    assert body["legend"].startswith("Brighter = mattered more for '")
    assert body["box"] == [0, 20, 120, 140], "the item Resize's centre square of the 120x160 photo"
    assert body["overlay"].startswith("data:image/png;base64,")


def test_api_explains_a_named_category_and_answers_png(client, face_jpeg):
    response = client.post("/api/explain?format=png&category=Cloth", data=upload(face_jpeg))
    assert response.status_code == 200 and response.mimetype == "image/png"
    assert response.headers["X-Category"] == "Cloth"
    assert Image.open(io.BytesIO(response.data)).size == (120, 160)


@pytest.mark.parametrize("query,status,code", [
    ("?category=Surgical", 400, "invalid_category"),
    ("?format=gif", 400, "invalid_format"),
    ("?faces=maybe", 400, "invalid_faces_mode"),
])
def test_api_refuses_bad_parameters_in_json(client, face_jpeg, query, status, code):
    response = client.post("/api/explain" + query, data=upload(face_jpeg))
    assert response.status_code == status and response.get_json()["error"] == code


def test_api_explain_has_the_upload_rules_of_predict(client):
    assert client.post("/api/explain").get_json()["error"] == "no_file"
    response = client.post("/api/explain", data=upload(b"not an image", "x.jpg"))
    assert response.status_code == 400 and response.get_json()["error"] == "not_an_image"


def test_api_explains_each_face(client):
    photo = Image.fromarray(data.astronaut()).crop((140, 20, 310, 230))
    body = client.post("/api/explain?faces=on", data=upload(encode(photo))).get_json()
    assert body["faces_found"] == 1
    [face] = body["faces"]
    assert face["crop"][0] <= face["box"][0] and face["box"][2] <= face["crop"][2]
    assert face["overlay"].startswith("data:image/png;base64,") and face["method"] == "grad-cam"


def test_api_explains_the_faces_of_a_dark_photo_the_page_shows(client, monkeypatch):
    """Per-face heat-maps come from the faces per-face mode finds, the second look at a dark photo included."""
    monkeypatch.setitem(client.application.extensions, "face_detector", FindsBrightFaces())
    dark = underexposed(Image.fromarray(data.astronaut()).crop((140, 20, 310, 230)), 0.2)
    body = client.post("/api/explain?faces=on", data=upload(encode(dark))).get_json()
    assert body["faces_found"] == 1 and len(body["faces"]) == 1


def test_api_explain_through_the_onnx_app(make_app, patch_onnx):
    client = make_app(model_path=patch_onnx).test_client()
    image = encode(patch_image({"red": 0}, seed=9), "PNG")
    body = client.post("/api/explain", data=upload(image, "p.png", "image/png")).get_json()
    assert body["method"] == "occlusion" and body["category"] == "red"


def test_a_slow_occlusion_is_a_503_not_a_500(make_app, patch_onnx):
    client = make_app(model_path=patch_onnx, face_time_budget_s=0.1).test_client()
    client.application.extensions["maskclassifier"].backend.session.run = slow_run(
        client.application.extensions["maskclassifier"].backend.session.run)
    image = encode(face_like_image(["Medical"], seed=1), "PNG")
    response = client.post("/api/explain", data=upload(image, "p.png", "image/png"))
    assert response.status_code == 503 and response.get_json()["error"] == "explain_timeout"
    assert "Retry-After" in response.headers


def slow_run(run):
    def slower(*args, **kwargs):
        import time

        time.sleep(0.06)
        return run(*args, **kwargs)

    return slower


def live_frame(size: tuple[int, int] = (640, 480)) -> bytes:
    """A camera frame: the astronaut's head (a real face MTCNN finds) on a grey background."""
    frame = Image.new("RGB", size, (110, 110, 110))
    frame.paste(Image.fromarray(data.astronaut()).crop((140, 20, 310, 230)), (200, 120))
    return encode(frame, quality=80)


def test_api_frame_answers_each_face_for_the_live_camera(client):
    response = client.post("/api/frame", data=upload(live_frame()))
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert (body["width"], body["height"]) == (640, 480) and body["server_ms"] > 0
    [face] = body["faces"]
    x0, y0, x1, y1 = face["box"]
    assert 200 <= x0 < x1 <= 370 and 120 <= y0 < y1 <= 330, "the box is around the pasted face"
    assert face["caption"].startswith("1 ") and face["colour"].startswith("#")
    assert "probabilities" not in body, "no whole-photo answer: the page draws faces only"


def test_api_frame_refuses_a_frame_that_is_a_photo(client):
    response = client.post("/api/frame", data=upload(live_frame((1600, 1200))))
    assert response.status_code == 400 and response.get_json()["error"] == "frame_too_large"
    assert client.post("/api/frame").get_json()["error"] == "no_file"


def test_a_model_that_cannot_be_explained_says_so(patch_model):
    from torch import nn

    from maskclassifier.classifier.explain import UnknownCategory
    from maskclassifier.classifier.heatmap import ExplainUnavailable, feature_split

    with pytest.raises(UnknownCategory):
        explain(load_classifier(patch_model, threshold=0.5, torch_threads=1), Image.new("RGB", (8, 8)), "green")
    with pytest.raises(ExplainUnavailable, match="no convolution"):
        feature_split(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))
    body, head = feature_split(nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), nn.Conv2d(4, 4, 1),
                                             nn.AdaptiveAvgPool2d(1), nn.Flatten()))
    assert len(body) == 2 and len(head) == 2, "cut after the last top-level part holding a convolution"


def test_a_wide_photo_is_explained_on_the_view_that_answered(patch_model):
    """Past VIEWS_ASPECT:1 the classifier answers from the square view that finds a category: the red patch at the
    right end of a 4:1 strip, which the centre crop cuts off. The map is of that view, and on the patch."""
    classifier = load_classifier(patch_model, threshold=0.5, torch_threads=1)
    strip = Image.new("RGB", (4 * PATCH_SIZE, PATCH_SIZE), (128, 128, 128))
    strip.paste(patch_image({"red": 5}, seed=11), (3 * PATCH_SIZE, 0))
    answer = classifier.predict(strip)
    explanation = explain(classifier, strip)
    assert answer.labels == ["red"] and explanation.category == "red"
    assert explanation.probability == pytest.approx(answer.probabilities["red"], abs=1e-4)
    assert explanation.box == (3 * PATCH_SIZE, 0, 4 * PATCH_SIZE, PATCH_SIZE)
    x0, y0, x1, y1 = patch_cell_box(5)
    patch = (x0 + 3 * PATCH_SIZE, y0, x1 + 3 * PATCH_SIZE, y1)
    assert mass_inside(explanation, patch, strip.size) >= 0.5
