"""Train the mask classifier on a labelled CSV and write the model, its sidecar, plots and model card.

    python -m maskclassifier.train --csv labels.csv --images-root DIR [--out runs/NAME/]
    python -m maskclassifier.train @recipes/NAME.args [more options]

Each run writes into a new folder, runs/YYYYMMDD-HHMMSS/ unless --out says otherwise; a folder that already holds
a trained model (e.g. models/, the shipped one) is written into only with --overwrite. `@FILE` reads options from
FILE, one or more to a line, `#` starting a comment (see recipes/).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from maskclassifier.core.cli import ArgsFileParser, silence_fastai_jit_warning

silence_fastai_jit_warning()  # before fastai is imported below: it warns at import time

import fastai  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from maskclassifier.core.config import Settings  # noqa: E402
from maskclassifier.core.sidecar import Sidecar, mostly_drawn, sha256_file  # noqa: E402
from maskclassifier.core.threshold import above_threshold  # noqa: E402
from maskclassifier.core.tta import TTA_CHOICES  # noqa: E402
from maskclassifier.training import facecache, metrics, reports  # noqa: E402
from maskclassifier.training.architecture import ARCHITECTURES, build_learner, load_initial_weights  # noqa: E402
from maskclassifier.training.dataset import (  # noqa: E402
    DatasetError,
    LabelledData,
    corrections_line,
    oversample,
    parse_merges,
    parse_oversample,
    subsample_training,
    training_examples,
)
from maskclassifier.training.errors import TrainingError  # noqa: E402
from maskclassifier.training.export import export_portable  # noqa: E402
from maskclassifier.training.fitting import (  # noqa: E402
    LR_FALLBACK,
    LR_FIND_EPOCHS,
    LR_FIND_MAX_STEPS,
    LR_FIND_MIN_STEPS,
    CpuBfloat16,
    build_dataloaders,
    find_lr,
    fit_batch_size,
    lr_find_steps,
    scratch_directory,
    with_plain_reader,
)
from maskclassifier.training.predictions import per_item_losses, validation_predictions  # noqa: E402
from maskclassifier.training.synthetic.augment import Augmentation  # noqa: E402
from maskclassifier.training.training_set import (  # noqa: E402
    RENDERING_SOURCES,
    add_face_crops,
    add_renderings,
    frame_donors,
    load_labelled_csv,
    mark_faces,
    rendered_categories,
)

if TYPE_CHECKING:
    from fastai.data.core import DataLoaders
    from fastai.learner import Learner

RUNS_FOLDER = Path("runs")
# What the shipped model is asked to reach on the validation split, written into each run's sidecar and card:
# issue 17's target (it was 0.92 / 0.92 / 0.98 up to model 7).
TARGET = {"exact_match": 0.94, "macro_f1": 0.95, "accuracy_multi": 0.985}
# What a run writes besides NAME.pkl and NAME.json: a folder holding any of them holds an earlier run's results.
RUN_FILES = ("MODEL_CARD.md", "metrics.json", "threshold_sweep.png", "confusion.png", "top_losses.png", "lr_find.png")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgsFileParser(prog="python -m maskclassifier.train", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", type=Path, required=True, help="CSV with columns fname, labels (space-separated)"
                        " and optionally is_valid, synthetic")
    parser.add_argument("--images-root", type=Path, help="folder the fname column is relative to (default: the CSV's)")
    parser.add_argument("--out", type=Path, help="output folder (default: a new runs/YYYYMMDD-HHMMSS/)")
    parser.add_argument("--overwrite", action="store_true",
                        help="allow --out to be a folder that already holds a trained model (e.g. models/), "
                             "replacing its model, sidecar, card and plots")
    parser.add_argument("--name", default="export", help="model file stem: NAME.pkl and NAME.json (default: export)")
    parser.add_argument("--arch", default="mobilenet_v2", choices=sorted(ARCHITECTURES))
    parser.add_argument("--no-pretrained", dest="pretrained", action="store_false",
                        help="start from random weights instead of ImageNet")
    parser.add_argument("--size", type=int, default=192, help="training/inference image size (default: 192)")
    parser.add_argument("--presize", type=int, help="item Resize before batch augmentation (default: size * 4/3)")
    parser.add_argument("--epochs", type=int, default=4, help="unfrozen epochs (default: 4)")
    parser.add_argument("--frozen-epochs", type=int, default=1, help="epochs with the body frozen (default: 1)")
    parser.add_argument("--lr", default="auto", help="learning rate, or 'auto' for lr_find's suggestion (default)")
    parser.add_argument("--lr-mult", type=float, default=100, metavar="M",
                        help="in the unfrozen epochs the body learns at 1/M of the head's rate (fastai's fine_tune "
                             "default: 100; MobileNetV2 has one body group, so all of it gets the lowest rate)")
    parser.add_argument("--head", type=int, default=128, metavar="FEATURES",
                        help="width of the head's hidden layer (default: 128; fastai's own default, 512, "
                             "adds 1 M parameters, about 4 MB per model file)")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="bf16: bfloat16 mixed precision, about 1.3x faster epochs on CPUs with AMX "
                             "(default: fp32)")
    parser.add_argument("--bs", type=int, default=64,
                        help="batch size (default: 64; at most the number of training images)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--valid-pct", type=float, default=0.2,
                        help="random validation share when the CSV has no is_valid column (default: 0.2)")
    parser.add_argument("--merge", action="append", default=[], metavar="OLD=NEW",
                        help="rename a label before training, e.g. --merge Surgical=Medical (repeatable)")
    parser.add_argument("--corrections", type=Path, metavar="FILE",
                        help="a corrections file (python -m maskclassifier.clean writes one): relabel or leave out "
                             "images after the CSV is read; the sidecar and model card record it")
    parser.add_argument("--oversample", action="append", default=[], metavar="LABEL=TIMES",
                        help="repeat training images with this label, e.g. --oversample Shield=3 (repeatable)")
    parser.add_argument("--train-fraction", type=float, default=1.0, metavar="F",
                        help="train on this random share (0-1, seeded) of the training images; images labelled "
                             "Shield all stay, validation is untouched (default: 1, all): a short "
                             "fine-tuning run on a busy machine")
    parser.add_argument("--face-crops", action="store_true",
                        help="also train on a close-up of the face of each training image with exactly one face "
                             "(found with MTCNN; needs facenet-pytorch): the view the web page's automatic mode "
                             f"classifies next to the whole photo, with FACE_MARGIN's default {Settings.face_margin}")
    parser.add_argument("--occluders", type=float, default=0.0, metavar="P",
                        help="chance (0-1) that a training image of a bare face (No_mask!, one face found) is read "
                             "with a hand, phone, microphone, hair or a scarf pulled down drawn over its lower face, "
                             "keeping its label (default: 0)")
    parser.add_argument("--frames", type=float, default=0.0, metavar="P",
                        help="chance (0-1) that a training image of a bare or masked face (one face found) is read "
                             "with a picture frame, a window, thick glasses, a cap's visor or a helmet, or a phone "
                             "held up beside the face drawn round it, keeping its labels: hard negatives for Shield "
                             "(issue 28; default: 0)")
    parser.add_argument("--lighting", type=float, default=0.0, metavar="P",
                        help="chance (0-1) that a training image is read in low light with sensor noise, "
                             "backlit or with a colour cast (default: 0)")
    parser.add_argument("--render", action="append", default=[], metavar="KIND=COUNT",
                        help="add COUNT training images with a respirator (gas: labelled Gas), a face shield "
                             "(shield: over a bare face or a mask, + Shield), a surgical mask (medical: Medical), a "
                             "cloth mask (cloth: Cloth), a KN95 (kn95: KN95), a clear shield as real ones look "
                             "(realshield: mostly over a mask, + Shield) or a photo of a phone held up whose screen "
                             "shows the face (screen: its labels kept) drawn over the one face found in a "
                             "training image of a bare face (shields also over masks); drawn anew at each read "
                             "(repeatable)")
    parser.add_argument("--face-cache", type=Path, default=facecache.DEFAULT_DIR, metavar="DIR",
                        help="keep the face boxes of training images here between runs, per detector version "
                             f"(default: {facecache.DEFAULT_DIR}; 'none' to find them every run)")
    parser.add_argument("--init-from", type=Path, metavar="PKL",
                        help="start from this exported learner's weights (same architecture and categories), "
                             "e.g. to continue training at a larger --size; with another --head, only its body")
    parser.add_argument("--tta", choices=TTA_CHOICES, default="none",
                        help="test-time augmentation the app will use, and the threshold is chosen with: none "
                             "(each image once; default) or flip (the mean of each image and its mirror image; "
                             "twice the inference work)")
    parser.add_argument("--workers", type=int, help="data-loading processes (default: fastai's)")
    parser.add_argument("--dataset-notes", type=Path,
                        help="DATASET.md for the model card's sources section (default: DATASET.md beside the CSV)")
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = RUNS_FOLDER / datetime.now().strftime("%Y%m%d-%H%M%S")
    if args.presize is None:
        args.presize = round(args.size * 4 / 3)
    if args.presize < args.size:
        parser.error("--presize must be at least --size")
    if args.lr != "auto":
        try:
            args.lr = float(args.lr)
        except ValueError:
            parser.error(f"--lr must be a number or 'auto', got {args.lr!r}")
    if args.lr_mult < 1:
        parser.error("--lr-mult must be 1 or more")
    if not 0 < args.valid_pct < 1:
        parser.error("--valid-pct must be between 0 and 1")
    if not 0 < args.train_fraction <= 1:
        parser.error("--train-fraction must be more than 0 and at most 1")
    for name in ("occluders", "lighting", "frames"):
        if not 0 <= getattr(args, name) <= 1:
            parser.error(f"--{name} must be between 0 and 1")
    try:
        args.render_counts = parse_renderings(args.render)
    except ValueError as exc:
        parser.error(str(exc))
    if args.bs < 2:
        parser.error("--bs must be at least 2 (BatchNorm cannot train on one image at a time)")
    if str(args.face_cache) == "none":
        args.face_cache = None
    return args


def parse_renderings(pairs: list[str]) -> dict[str, int]:
    """['gas=400', 'shield=500'] -> {'gas': 400, 'shield': 500}; ValueError naming the bad pair."""
    counts = {}
    for pair in pairs:
        kind, _, count = pair.partition("=")
        if kind not in RENDERING_SOURCES or not count.isdigit() or int(count) < 1:
            raise ValueError(f"--render takes KIND=COUNT with KIND one of {', '.join(RENDERING_SOURCES)} and COUNT "
                             f"a positive whole number, got {pair!r}")
        counts[kind] = int(count)
    return counts


def earlier_results(out: Path, name: str) -> list[str]:
    """The files in `out` this run would replace: an earlier run's model, sidecar, card, metrics or plots."""
    return [file for file in (f"{name}.pkl", f"{name}.json", *RUN_FILES) if (out / file).exists()]


def check_out_folder(out: Path, name: str, overwrite: bool) -> None:
    """TrainingError when `out` holds an earlier run's results and --overwrite was not given."""
    found = earlier_results(out, name)
    if found and not overwrite:
        raise TrainingError(f"{out} already holds a trained model ({', '.join(found)}); pass --overwrite to replace "
                            f"it, or leave out --out to train into a new folder under {RUNS_FOLDER}/")


def recorded_options(args: argparse.Namespace) -> dict:
    """Every parsed option, for the sidecar: a new option is recorded without anyone listing it here."""
    plain = (str, int, float, bool, list, type(None))
    return {name: value if isinstance(value, plain) else str(value) for name, value in sorted(vars(args).items())}


def choose_lr(learn, requested, out: Path) -> tuple[float, str]:
    """The learning rate and where it came from ("--lr", "lr_find" with its plot in `out`, or "default" when the
    data is too small for lr_find to say anything). lr_find's cost is bounded by the data, and printed."""
    if requested != "auto":
        return requested, "--lr"
    batches = len(learn.dls.train)
    steps = lr_find_steps(batches)
    if steps < LR_FIND_MIN_STEPS:
        print(f"too little data for lr_find ({batches} training batch(es) per epoch, {steps} of the "
              f"{LR_FIND_MIN_STEPS} steps it needs in {LR_FIND_EPOCHS} epochs' worth): using fastai's default "
              f"learning rate {LR_FALLBACK:g}; pass --lr to choose another", flush=True)
        return LR_FALLBACK, "default"
    print(f"lr_find: {steps} steps at rising learning rates to suggest one ({batches} training batches per epoch; "
          f"at most {LR_FIND_EPOCHS} epochs' worth and {LR_FIND_MAX_STEPS} steps); pass --lr to skip it", flush=True)
    suggestion, lrs, losses = find_lr(learn, steps)
    reports.plot_lr_find(lrs, losses, suggestion, out / "lr_find.png")
    print(f"lr_find suggests {suggestion:.2e}", flush=True)
    return suggestion, "lr_find"


def examples_per_category(data, vocab: list[str], renderings: dict[str, int] | None) -> dict[str, dict[str, int]]:
    """Real and drawn training examples per category (dataset.training_examples): the training split's images by
    the CSV's `synthetic` column, plus the `--render` images, drawn anew each epoch, as that many drawn examples."""
    return training_examples(data.frame.to_dict("records"), vocab, rendered_categories(renderings or {}))


def write_top_losses(data, probs: np.ndarray, targets: np.ndarray, vocab: list[str], threshold: float,
                     path: Path, count: int = 9) -> None:
    valid = data.frame[data.frame["is_valid"]].reset_index(drop=True)
    losses = per_item_losses(probs, targets)
    order = np.argsort(-losses)[:count]

    def names(row: np.ndarray) -> str:
        return " ".join(name for name, on in zip(vocab, row, strict=True) if on) or "(none)"

    titles = [f"{names(targets[i] > 0.5)} / {names(above_threshold(probs[i], threshold))} / {losses[i]:.2f}"
              for i in order]
    reports.plot_top_losses([data.images_root / valid.loc[i, "fname"] for i in order], titles, path)


def train(args: argparse.Namespace) -> Sidecar:
    check_out_folder(args.out, args.name, args.overwrite)
    with scratch_directory() as workdir:
        return _train(args, workdir)


@dataclass
class PreparedData:
    """The labelled set, and the rows the learner is fitted on, after every option that changes them."""

    data: LabelledData  # as read (corrections, --train-fraction), faces marked when needed: validation, the export
    training: LabelledData  # `data` with the close-ups, oversampling and renderings: what is fitted on
    augmentation: Augmentation
    batch_size: int
    face_crops: dict | None  # {"margin", "added"} with --face-crops
    renderings: dict[str, int] | None  # rows added per --render kind


@dataclass
class FittedLearner:
    """The fine-tuned learner and how it was trained."""

    learn: Learner
    dls: DataLoaders  # the training DataLoaders (the export gives `learn` plain ones): the vocab, Normalize's stats
    initialised: str | None  # what --init-from took: "model", "body", or None without it
    lr: float
    lr_from: str  # "--lr", "lr_find" or "default" (choose_lr)


@dataclass
class Validation:
    """The fitted learner on the validation set, as the app will answer, and the threshold chosen there."""

    vocab: list[str]
    probs: np.ndarray
    targets: np.ndarray
    threshold: float
    report: dict  # metrics.summary at the threshold, with the threshold sweep: metrics.json


def _train(args: argparse.Namespace, workdir: Path) -> Sidecar:
    """One run, stage by stage: the data, the learner, fitting it, the validation threshold, the run folder."""
    started = time.time()
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    prepared = prepare_data(args)
    args.out.mkdir(parents=True, exist_ok=True)
    learn, initialised = make_learner(args, prepared, workdir)
    dls = learn.dls
    lr, lr_from = fit_learner(args, learn)
    fitted = FittedLearner(learn, dls, initialised, lr, lr_from)
    validation = validate(learn, args.tta)
    return write_run_folder(args, prepared, fitted, validation, started)


def read_data(args: argparse.Namespace) -> LabelledData:
    """The labelled CSV read and checked, its corrections applied, its training images cut to --train-fraction."""
    data = load_labelled_csv(args.csv, args.images_root, parse_merges(args.merge), args.valid_pct, args.seed,
                             args.corrections)
    if data.skipped:
        print(f"skipped {len(data.skipped)} unreadable image(s), e.g. {data.skipped[0]}", flush=True)
    if data.corrections:
        print(corrections_line(data.corrections), flush=True)
    if args.train_fraction < 1:
        before = int((~data.frame["is_valid"]).sum())
        data = subsample_training(data, args.train_fraction, {"Shield"}, args.seed)
        print(f"--train-fraction {args.train_fraction:g}: {int((~data.frame['is_valid']).sum())} of {before} "
              "training images (all Shield images kept)", flush=True)
    return data


def prepare_data(args: argparse.Namespace) -> PreparedData:
    """The labelled set (read_data) and the rows trained on: faces marked when an option draws on them or crops
    them, close-ups, oversampling, renderings; and the batch size they allow."""
    data = read_data(args)
    augmentation = Augmentation(occluders=args.occluders, lighting=args.lighting, frames=args.frames)
    if args.face_crops or args.render_counts or augmentation:
        data = mark_faces(data, args.face_cache)
    training_data, face_crops = data, None
    if args.face_crops:
        training_data, added = add_face_crops(data, Settings.face_margin)
        face_crops = {"margin": Settings.face_margin, "added": added}
        print(f"--face-crops: {added} face close-ups added to the training images", flush=True)
    training_data = oversample(training_data, parse_oversample(args.oversample))
    renderings = None
    if args.render_counts:  # after oversampling: the counts asked for are the counts trained on
        training_data, renderings = add_renderings(training_data, args.render_counts, args.seed)
        print("--render: " + ", ".join(f"{count} {kind}" for kind, count in renderings.items()) +
              " images to draw on training images", flush=True)
    train_images = int((~training_data.frame["is_valid"]).sum())
    batch_size = fit_batch_size(args.bs, train_images)
    if batch_size != args.bs:
        print(f"--bs {args.bs} is more than the {train_images} training images: training with batches of "
              f"{batch_size}", flush=True)
    return PreparedData(data, training_data, augmentation, batch_size, face_crops, renderings)


def make_learner(args: argparse.Namespace, prepared: PreparedData, workdir: Path) -> tuple[Learner, str | None]:
    """The DataLoaders over the training rows (drawn on as the options say) and a learner on them, started from
    --init-from's weights if given, with bfloat16 for --precision bf16; and what --init-from took (or None)."""
    donors = frame_donors(prepared.training) if args.frames else None
    dls = build_dataloaders(prepared.training, args.size, args.presize, prepared.batch_size, args.seed, args.workers,
                            prepared.augmentation, donors)
    learn = build_learner(dls, args.arch, args.pretrained, head_features=args.head, workdir=workdir)
    initialised = load_initial_weights(learn, args.init_from) if args.init_from else None
    if initialised == "body":
        print(f"--init-from: took the body of {args.init_from}; the head (--head {args.head}) starts fresh",
              flush=True)
    if args.precision == "bf16":
        learn.add_cb(CpuBfloat16())
    return learn, initialised


def fit_learner(args: argparse.Namespace, learn: Learner) -> tuple[float, str]:
    """fastai's fine_tune at the chosen learning rate (choose_lr), then the learner made ready to validate and
    export: float32, its path out of the scratch folder. Returns the learning rate and where it came from."""
    lr, lr_from = choose_lr(learn, args.lr, args.out)
    learn.fine_tune(args.epochs, base_lr=lr, freeze_epochs=args.frozen_epochs, lr_mult=args.lr_mult)
    learn.remove_cb(CpuBfloat16)  # validation figures and the export are float32, as the app runs them
    learn.path = Path(".")  # fastai's default: the export must not point at the scratch folder, deleted next
    return lr, lr_from


def validate(learn: Learner, tta: str) -> Validation:
    """The validation set's predictions as the app makes them with `tta`, the threshold that scores best on them,
    and the metrics at that threshold (printed as a table)."""
    vocab = list(learn.dls.vocab)
    probs, targets = validation_predictions(learn, tta)
    sweep = metrics.threshold_sweep(probs, targets)
    threshold = metrics.best_threshold(sweep)
    report = metrics.summary(probs, targets, vocab, threshold)
    report["threshold_sweep"] = sweep
    print(metrics.format_table(report), flush=True)
    return Validation(vocab, probs, targets, threshold, report)


def write_run_folder(args: argparse.Namespace, prepared: PreparedData, fitted: FittedLearner, validation: Validation,
                     started: float) -> Sidecar:
    """Everything a run leaves in --out: the portable export NAME.pkl, the plots and metrics.json, the sidecar
    NAME.json and MODEL_CARD.md. Returns the sidecar."""
    model_path = args.out / f"{args.name}.pkl"
    with_plain_reader(fitted.learn, prepared.data, args.size, args.presize, prepared.batch_size, args.seed,
                      args.workers)
    export_portable(fitted.learn, model_path.resolve())
    write_reports(args.out, prepared.data, validation)
    sidecar = run_sidecar(args, prepared, fitted, validation, model_path, started)
    sidecar.write(model_path)
    notes = args.dataset_notes or args.csv.parent / "DATASET.md"
    (args.out / "MODEL_CARD.md").write_text(reports.model_card(sidecar.to_json(), notes))
    print(f"wrote {model_path} and {args.name}.json, metrics, plots and MODEL_CARD.md to {args.out} "
          f"in {sidecar.training['seconds'] / 60:.1f} min", flush=True)
    if model_path.with_suffix(".onnx").exists():
        print(f"{model_path.with_suffix('.onnx')} is now stale; re-export it with: "
              f"python -m maskclassifier.export_onnx {model_path}", flush=True)
    return sidecar


def write_reports(out: Path, data: LabelledData, validation: Validation) -> None:
    """The threshold sweep, confusion and top-losses plots and metrics.json, in `out`."""
    report, threshold = validation.report, validation.threshold
    reports.plot_threshold_sweep(report["threshold_sweep"], threshold, out / "threshold_sweep.png")
    reports.plot_confusion(report, out / "confusion.png")
    write_top_losses(data, validation.probs, validation.targets, validation.vocab, threshold, out / "top_losses.png")
    (out / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")


def run_sidecar(args: argparse.Namespace, prepared: PreparedData, fitted: FittedLearner, validation: Validation,
                model_path: Path, started: float) -> Sidecar:
    """The sidecar of the exported model at `model_path`: what the app needs to serve it (vocab, threshold, TTA,
    preprocessing), its validation metrics, and how it was trained (training_record)."""
    report = validation.report
    return Sidecar(
        model_file=model_path.name,
        sha256=sha256_file(model_path),
        vocab=validation.vocab,
        threshold=validation.threshold,
        tta=args.tta,
        architecture=args.arch,
        input_size=args.size,
        preprocessing={"presize": args.presize, "resize_method": "crop", "size": args.size,
                       "normalize": _normalize_stats(fitted.dls)},
        metrics={key: report[key] for key in ("threshold", "images", "accuracy_multi", "exact_match",
                                              "macro_f1", "per_class")},
        training=training_record(args, prepared, fitted, validation.vocab, started),
        versions={"python": platform.python_version(), "fastai": fastai.__version__, "torch": torch.__version__},
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def training_record(args: argparse.Namespace, prepared: PreparedData, fitted: FittedLearner, vocab: list[str],
                    started: float) -> dict:
    """The sidecar's `training`: the options, learning rate, data set and its examples per category, time taken."""
    data = prepared.data
    examples = examples_per_category(data, vocab, prepared.renderings)
    valid_count = int(data.frame["is_valid"].sum())
    return {
        "pretrained": args.pretrained,
        "epochs": args.epochs,
        "frozen_epochs": args.frozen_epochs,
        "lr": fitted.lr,
        "lr_from": fitted.lr_from,
        "lr_mult": args.lr_mult,
        "head_features": args.head,
        "precision": args.precision,
        "batch_size": prepared.batch_size,
        "seed": args.seed,
        "merges": args.merge,
        "oversample": args.oversample,
        "face_crops": prepared.face_crops,
        "augmentation": {"occluders": args.occluders, "lighting": args.lighting, "frames": args.frames,
                         "renderings": prepared.renderings or {}},
        "init_from": None if args.init_from is None else {"file": args.init_from.name,
                                                          "sha256": sha256_file(args.init_from),
                                                          "took": fitted.initialised},
        "device": _device_name(),
        "seconds": round(time.time() - started, 1),
        "options": recorded_options(args),  # every option as parsed, to rerun it (see recipes/)
        "target": TARGET,
        "dataset": {
            "csv": args.csv.name,
            "csv_sha256": sha256_file(args.csv),
            "images": len(data.frame),
            "train_images": len(data.frame) - valid_count,
            "valid_images": valid_count,
            "skipped": len(data.skipped),
            # the categories most of whose examples were drawn (sidecar.DRAWN_SHARE_FLAG), for the model card;
            # the app applies the rule to `examples` itself
            "synthetic_categories": mostly_drawn(examples),
            "examples": examples,
            "corrections": data.corrections,
        },
    }


def _normalize_stats(dls) -> dict | None:
    for tfm in dls.after_batch.fs:
        if type(tfm).__name__ == "Normalize":
            return {"mean": tfm.mean.flatten().tolist(), "std": tfm.std.flatten().tolist()}
    return None


def _device_name() -> str:
    return f"CPU ({torch.get_num_threads()} threads, {platform.machine()})"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        train(args)
    except (DatasetError, TrainingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted; {args.out} may hold a partial run", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
