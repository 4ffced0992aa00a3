"""Plots and the model card written next to a trained model."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import jinja2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from maskclassifier.core.sidecar import DRAWN_SHARE_FLAG  # noqa: E402


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def plot_threshold_sweep(sweep: list[dict[str, float]], chosen: float, path: Path) -> Path:
    figure, axes = plt.subplots(figsize=(7, 4))
    thresholds = [row["threshold"] for row in sweep]
    for key, label in (("accuracy_multi", "accuracy_multi"), ("exact_match", "exact match"), ("macro_f1", "macro-F1")):
        axes.plot(thresholds, [row[key] for row in sweep], marker="o", markersize=3, label=label)
    axes.axvline(chosen, color="grey", linestyle="--", label=f"chosen {chosen:.2f}")
    axes.set(xlabel="threshold", ylabel="score on the validation set", title="Threshold sweep")
    axes.legend()
    axes.grid(alpha=0.3)
    return _save(figure, path)


def plot_lr_find(lrs: Sequence[float], losses: Sequence[float], suggestion: float, path: Path) -> Path:
    figure, axes = plt.subplots(figsize=(7, 4))
    axes.plot(lrs, losses)
    axes.axvline(suggestion, color="red", linestyle="--", label=f"suggested {suggestion:.2e}")
    axes.set(xscale="log", xlabel="learning rate", ylabel="loss", title="lr_find")
    axes.legend()
    return _save(figure, path)


def plot_confusion(report: dict, path: Path) -> Path:
    """One 2x2 confusion matrix per category, and the true-vs-predicted co-occurrence table."""
    per_class = report["per_class"]
    names = list(per_class)
    figure, axes = plt.subplots(2, len(names), figsize=(2.4 * len(names), 5.4),
                                gridspec_kw={"height_ratios": [1, 1.6]})
    for axis, name in zip(axes[0], names, strict=True):
        matrix = np.array(per_class[name]["confusion"])
        axis.imshow(matrix, cmap="Blues")
        for (row, col), count in np.ndenumerate(matrix):
            axis.text(col, row, str(count), ha="center", va="center")
        axis.set(title=name, xticks=[0, 1], yticks=[0, 1], xticklabels=["no", "yes"], yticklabels=["no", "yes"],
                 xlabel="predicted", ylabel="actual")
    grid = figure.add_subplot(2, 1, 2)
    for axis in axes[1]:
        axis.remove()
    counts = np.array(report["cooccurrence"]["counts"])
    grid.imshow(counts, cmap="Oranges")
    for (row, col), count in np.ndenumerate(counts):
        grid.text(col, row, str(count), ha="center", va="center", fontsize=8)
    grid.set(xticks=range(len(names)), yticks=range(len(names)), xticklabels=names, yticklabels=names,
             xlabel="predicted label", ylabel="true label", title="Label co-occurrence (true vs predicted)")
    return _save(figure, path)


def plot_top_losses(paths: Sequence[Path], titles: Sequence[str], path: Path) -> Path:
    columns = 3
    rows = max(1, -(-len(paths) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 4.3 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, image_path, title in zip(axes.flat, paths, titles, strict=False):
        with Image.open(image_path) as image:
            axis.imshow(image.convert("RGB"))
        axis.set_title(title, fontsize=8)
    figure.suptitle("Top losses (actual / predicted / loss)")
    return _save(figure, path)


def dataset_sources(dataset_md: Path | None) -> str:
    """The 'Sources' section of a DATASET.md (data origin and licence notes), or '' when there is none."""
    if dataset_md is None or not dataset_md.is_file():
        return ""
    text = dataset_md.read_text(encoding="utf-8")
    match = re.search(r"^## Sources\n(.*?)(?=^## )", text, flags=re.S | re.M)
    return match.group(1).strip() if match else ""


def _continued_from(training: dict) -> str:
    source = training.get("init_from")
    if not source:
        return ""
    taken = "the body's weights" if source.get("took") == "body" else "the weights"
    return f" Started from {taken} of `{source['file']}` (sha256 `{source['sha256'][:12]}…`)."


def _head_and_precision(training: dict) -> str:
    """Older sidecars lack both keys: they were trained with fastai's 512-feature head in float32."""
    precision = "bfloat16 mixed" if training.get("precision") == "bf16" else "float32"
    return f"a head with {training.get('head_features', 512)} hidden features, {precision} precision"


def _oversampled(training: dict) -> str:
    factors = training.get("oversample")
    return f" Training images oversampled: {', '.join(factors)} (times in all)." if factors else ""


def _face_crops(training: dict) -> str:
    crops = training.get("face_crops")
    if not crops:
        return ""
    return (f" Also trained on {crops['added']} close-ups of the face (margin {crops['margin']:g}) of the training "
            "images with exactly one face, the view the web page's automatic mode adds to the whole photo.")


def _augmentation(training: dict) -> str:
    augmentation = training.get("augmentation") or {}
    parts = []
    if augmentation.get("occluders"):
        parts.append(f"{augmentation['occluders']:.0%} of the reads of a bare face (one face found) with a hand, "
                     "phone, microphone, hair or a scarf pulled down drawn over the lower face, still labelled "
                     "`No_mask!`")
    if augmentation.get("lighting"):
        parts.append(f"{augmentation['lighting']:.0%} of all training reads in low light with sensor noise, "
                     "backlit or with a colour cast")
    if augmentation.get("frames"):
        parts.append(f"{augmentation['frames']:.0%} of the reads of a bare or masked face (one face found) with a "
                     "picture frame, a window, thick glasses, a cap's visor or a helmet, or a phone held up beside "
                     "the face drawn round it, labels kept (`frames.py`)")
    rendered = augmentation.get("renderings") or {}
    if rendered:
        parts.append(" and ".join(f"{count} {RENDERED.get(kind, kind)}" for kind, count in rendered.items()) +
                     " drawn anew at each read on training images with one face")
    if not parts:
        return ""
    return f" Training-time augmentation (`maskclassifier/training/synthetic/augment.py`): {'; '.join(parts)}."


RENDERED = {"gas": "images with a respirator (labelled `Gas`)",
            "shield": "images with a face shield (over a bare face or a mask, + `Shield`)",
            "medical": "images with a drawn surgical mask (labelled `Medical`)",
            "cloth": "images with a drawn cloth mask (labelled `Cloth`)",
            "kn95": "images with a drawn KN95 (labelled `KN95`)",
            "realshield": "images with a clear face shield drawn as real ones look (forehead band, glare, a visible "
                          "lower edge; 85 % over a real or drawn mask, + `Shield`)",
            "screen": "photos of a phone or tablet held up whose screen shows the face (its labels kept, never "
                      "`Shield`)"}


def _lr_origin(training: dict) -> str:
    return " (fastai's default: too little data for lr_find)" if training.get("lr_from") == "default" else ""


def _tta_line(tta: str) -> str:
    if tta == "flip":
        return ("Test-time augmentation: each image's probabilities are the mean of the image and its mirror image, "
                "in the app and in every figure below (twice the inference work of one view).")
    return "Test-time augmentation: none; each image is classified once."


def _synthetic_note(dataset: dict) -> str:
    """The model card's line on the categories learnt mostly from drawn examples, with their counts."""
    synthetic = dataset.get("synthetic_categories") or []
    if not synthetic:
        return "No category was learnt mostly from drawn examples (marked synthetic in the training CSV, or --render)."
    examples = dataset.get("examples") or {}
    counts = "; ".join(f"`{name}`: {examples[name]['drawn']} drawn and {examples[name]['real']} real"
                       for name in synthetic if name in examples)
    return (f"**Mostly drawn categories: {', '.join(f'`{name}`' for name in synthetic)}.** At least "
            f"{DRAWN_SHARE_FLAG:.0%} of their training examples were drawn (generated, or an overlay drawn onto a "
            "real face), not photographed" + (f" ({counts}; the images drawn at each read by --render counted once, "
                                              "for one epoch)" if counts else "") +
            ". Scores on them measure how well the model recognises the drawings; expect lower accuracy on real "
            "photographs. The app says so next to every answer that names them.")


def model_card(sidecar: dict, dataset_md: Path | None) -> str:
    """MODEL_CARD.md from the sidecar's facts (template: model_card.md.j2): nothing in it is typed by hand."""
    metrics, training = sidecar["metrics"], sidecar["training"]
    synthetic_note = _synthetic_note(training["dataset"])
    target = training.get("target")
    return _TEMPLATES.get_template("model_card.md.j2").render(
        s=sidecar, t=training, m=metrics, vocab=sidecar["vocab"],
        lr_origin=_lr_origin(training), lr_mult=f"{training.get('lr_mult', 100):g}",
        head_and_precision=_head_and_precision(training), continued_from=_continued_from(training),
        oversampled=_oversampled(training), face_crops=_face_crops(training) + _augmentation(training),
        tta_line=_tta_line(sidecar.get("tta", "none")),
        target=target and {"met": all(metrics[key] >= value for key, value in target.items()),
                           "wanted": ", ".join(f"{key} >= {value}" for key, value in target.items())},
        synthetic_note=synthetic_note,
        sources=dataset_sources(dataset_md) or "No DATASET.md was found beside the training CSV.",
    )


_TEMPLATES = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent), trim_blocks=True,
                                keep_trailing_newline=True, undefined=jinja2.StrictUndefined, autoescape=False)
_TEMPLATES.filters["code"] = lambda value: f"`{value}`"
