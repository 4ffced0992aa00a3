"""Review a labelled CSV image by image, in a local page, and record corrections without touching the CSV.

    python -m maskclassifier.clean --csv labels.csv [--images-root DIR] [--model models/export.pkl]
        [--corrections FILE] [--port N]

The page is served on 127.0.0.1 only, under a random token in the URL this prints; any request without it gets
403. With --model the images are scored first (batch-wise, with progress; cached beside the corrections file,
keyed by the model's and the CSV's sha256, so a restart is instant) and listed by loss, highest first; without it,
in the CSV's order. Every decision is appended to the corrections file at once; restarting with the same file
shows them. `train` and `evaluate` apply the file with --corrections FILE. Images and the CSV are only read.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from pathlib import Path

from werkzeug.serving import make_server

from maskclassifier.core.cli import silence_fastai_jit_warning
from maskclassifier.core.errors import ModelLoadError

HOST = "127.0.0.1"  # never another interface: the page can rewrite the owner's labels


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m maskclassifier.clean", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", type=Path, required=True, help="CSV with columns fname and labels (space-separated)")
    parser.add_argument("--images-root", type=Path, help="folder the fname column is relative to (default: the CSV's)")
    parser.add_argument("--model", type=Path, help="a .pkl or .onnx model to rank the images by (default: none, "
                                                   "the CSV's order)")
    parser.add_argument("--corrections", type=Path,
                        help="where decisions are appended (default: CSVNAME-corrections.csv in the current folder)")
    parser.add_argument("--port", type=int, default=5050, help="port on 127.0.0.1 (default: 5050; 0: any free one)")
    args = parser.parse_args(argv)
    if args.images_root is None:
        args.images_root = args.csv.parent
    if args.corrections is None:
        args.corrections = Path(f"{args.csv.stem}-corrections.csv")
    if not 0 <= args.port <= 65535:
        parser.error("--port must be from 0 to 65535")
    return args


def build(args: argparse.Namespace, token: str):
    """The Flask app for `args`: the CSV read, the images scored (when there is a model), the decisions so far."""
    from maskclassifier.clean.app import create_app
    from maskclassifier.clean.review import open_review, read_labels_csv

    _, rows = read_labels_csv(args.csv)
    vocab = probabilities = threshold = None
    if args.model is not None:
        from maskclassifier.clean.scoring import score_csv  # the classifier layer: torch or ONNX Runtime

        scores = score_csv(args.model, [row["fname"] for row in rows], args.images_root, args.csv, args.corrections)
        vocab, probabilities, threshold = scores.vocab, scores.probabilities, scores.threshold
    review = open_review(args.csv, args.images_root, args.corrections, vocab, probabilities, threshold)
    return create_app(review, token), review


def main(argv: list[str] | None = None) -> int:
    silence_fastai_jit_warning()
    args = parse_args(argv)
    from maskclassifier.clean.review import ReviewError

    token = secrets.token_urlsafe(24)
    try:
        app, review = build(args, token)
        server = make_server(HOST, args.port, app, threaded=True)
    except (ReviewError, ModelLoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the port is taken
        print(f"error: cannot listen on {HOST}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    counts = review.counts()
    print(f"{counts['images']} images, {counts['decided']} decided so far; decisions go to {args.corrections}")
    print(f"open http://{HOST}:{server.server_port}/{token}/  (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print(f"stopped; decisions are in {args.corrections}")
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
