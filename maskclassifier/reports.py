"""Plots and the model card written next to a trained model."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


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
    for axis, name in zip(axes[0], names):
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
    for axis, image_path, title in zip(axes.flat, paths, titles):
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


def _lr_origin(training: dict) -> str:
    return " (fastai's default: too little data for lr_find)" if training.get("lr_from") == "default" else ""


def _tta_line(tta: str) -> str:
    if tta == "flip":
        return ("Test-time augmentation: each image's probabilities are the mean of the image and its mirror image, "
                "in the app and in every figure below (twice the inference work of one view).")
    return "Test-time augmentation: none; each image is classified once."


def model_card(sidecar: dict, dataset_md: Path | None) -> str:
    """MODEL_CARD.md from the sidecar's facts: nothing in it is typed by hand."""
    metrics = sidecar["metrics"]
    training = sidecar["training"]
    synthetic = training["dataset"].get("synthetic_categories") or []
    rows = "\n".join(
        f"| `{name}` | {row['precision']:.3f} | {row['recall']:.3f} | {row['f1']:.3f} | {row['support']} |"
        for name, row in metrics["per_class"].items()
    )
    sources = dataset_sources(dataset_md) or "No DATASET.md was found beside the training CSV."
    synthetic_note = (
        f"**Synthetic categories: {', '.join(f'`{name}`' for name in synthetic)}.** Every training and validation "
        "image of these categories was generated (an overlay drawn onto real faces), not photographed. Scores on them "
        "measure how well the model recognises the rendering; expect lower accuracy on real photographs."
        if synthetic else "No category is marked synthetic in the training CSV."
    )
    target = training.get("target")
    target_line = ""
    if target:
        met = all(metrics[key] >= value for key, value in target.items())
        wanted = ", ".join(f"{key} >= {value}" for key, value in target.items())
        target_line = f"\nTarget ({wanted}): **{'met' if met else 'not met'}**.\n"
    return f"""# Model card: face-mask multi-label classifier

## Intended use
Classify the face masks in a photo for demonstrations and education: which of {', '.join(f'`{c}`' for c in sidecar['vocab'])}
appear. `-` means "not a face or mask photo"; `No_mask!` means a bare face. It is not a safety device and must not be
used to enforce mask rules or to make decisions about people.

## Model
- Architecture: `{sidecar['architecture']}` ({'ImageNet-pretrained' if training['pretrained'] else 'from scratch'}), fastai `vision_learner`, multi-label (sigmoid + threshold).
- Input: {sidecar['preprocessing']['presize']} px item resize (center crop), then {sidecar['input_size']} px, ImageNet normalisation.
- Training: {training['frozen_epochs']} frozen + {training['epochs']} unfrozen epochs, learning rate {training['lr']:.2e}{_lr_origin(training)} (the body at 1/{training.get('lr_mult', 100):g} of the head's rate in the unfrozen epochs), batch size {training['batch_size']}, {_head_and_precision(training)}, seed {training['seed']}, on {training['device']}; wall time {training['seconds'] / 60:.1f} min.{_continued_from(training)}{_oversampled(training)}{_face_crops(training)}
- Threshold: **{sidecar['threshold']:.2f}**, chosen on the validation set as the one with the best macro-F1 (see `threshold_sweep.png`).
- {_tta_line(sidecar.get('tta', 'none'))}
- Versions: Python {sidecar['versions']['python']}, fastai {sidecar['versions']['fastai']}, torch {sidecar['versions']['torch']}. The `.pkl` loads only under the same Python minor version.

## Metrics (validation split, {metrics['images']} images, threshold {metrics['threshold']:.2f})
| metric | value |
|---|---|
| exact-match (subset) accuracy | {metrics['exact_match']:.4f} |
| macro-F1 | {metrics['macro_f1']:.4f} |
| accuracy_multi | {metrics['accuracy_multi']:.4f} |
{target_line}
| category | precision | recall | F1 | support |
|---|---|---|---|---|
{rows}

Plots: `threshold_sweep.png`, `confusion.png` (a 2x2 matrix per category and the true-vs-predicted co-occurrence
table), `top_losses.png`{', `lr_find.png`' if training.get('lr_from', 'lr_find') == 'lr_find' else ''}. Figures in `metrics.json`.

## Data
Training CSV sha256 `{training['dataset']['csv_sha256']}`, {training['dataset']['images']} images
({training['dataset']['train_images']} train, {training['dataset']['valid_images']} validation, {training['dataset']['skipped']} unreadable skipped).

{synthetic_note}

Sources and licence notes, from the dataset's DATASET.md:

{sources}

## Known failure modes
- Several people in one photo: the whole-image classifier answers for the photo, not per person (use the per-face mode).
- Side or profile views, small or distant faces, and heavy blur.
- A hand, scarf or microphone over the mouth can look like a mask; a mask pulled under the chin can look like no mask.
- Cloth, Medical and KN95 look alike in poor light or at low resolution.
- Real face shields and gas masks differ from the synthetic training images.
"""
