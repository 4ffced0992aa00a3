"""Issue 17's fault photos through the app: what a model answers on each, on the API's default and the page's.

    .venv/bin/python -m benchmarks.faults [--model models/export.pkl] [--save DIR] [--only SUBSTRING]

The photos are tests/helpers.py `fault_cases()` (the ones tests/test_faults.py checks): a bare face behind a hand
(three skin tones, two poses), a phone, a microphone, hair, and a scarf pulled down under the chin; the mask
examples with a hand beside the mask; each example at 0.5, 0.35 and 0.2 of the light with sensor noise, and
backlit; and 4:1 and 1:4 photos with the person at one end. Then issue 28's `shield_fault_cases()`: a phone held
up showing each example, and each example in a picture frame, behind a window, in thick glasses and in a cap
(right: no Shield in the answer). Each is uploaded as a JPEG (quality 92) to the app
serving --model (its sidecar's threshold) twice: `POST /api/predict` (the API's default, the whole photo) and
`POST /api/predict?faces=auto` (the page's default, automatic mode). It prints one row per photo: whether each
answer is right (`ok`/`WRONG`), the labels ("not confident" when none passes), and the three most probable
categories. Compare the shipped model with a candidate by running it twice:

    .venv/bin/python -m benchmarks.faults --model models/export.pkl
    .venv/bin/python -m benchmarks.faults --model runs/NAME/export.pkl     # or its export.onnx (needs export.json)

--save DIR writes each fault photo there as NAME.jpg (the bytes that were uploaded), to look at. Bounded: 35 + 20
photos, two requests each, one inference thread (about two minutes on 2 idle cores).
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))

from helpers import FAULT_JPEG_QUALITY, encode, fault_cases, shield_fault_cases, upload  # noqa: E402
from maskclassifier.core.cli import silence_fastai_jit_warning  # noqa: E402
from maskclassifier.core.config import Settings  # noqa: E402
from maskclassifier.web import create_app  # noqa: E402

MODES = {"API default": "/api/predict", "page default": "/api/predict?faces=auto"}


def describe(body: dict) -> str:
    labels = ", ".join(body["labels"]) or "not confident"
    top = sorted(body["probabilities"].items(), key=lambda item: -item[1])[:3]
    return f"{labels} ({' '.join(f'{name} {p:.2f}' for name, p in top)})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "export.pkl")
    parser.add_argument("--save", type=Path, help="write each fault photo here as NAME.jpg")
    parser.add_argument("--only", default="", help="only the cases whose name contains this")
    args = parser.parse_args(argv)
    silence_fastai_jit_warning()
    app = create_app(Settings(model_path=args.model, threshold=None, torch_threads=1))
    client = app.test_client()
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
    groups = {"issue 17": fault_cases(), "issue 28 (no Shield)": shield_fault_cases()}
    groups = {group: [case for case in cases if args.only in case.name] for group, cases in groups.items()}
    cases = [case for group in groups.values() for case in group]
    started = time.perf_counter()
    rows, wrong = [], {(group, mode): 0 for group in groups for mode in MODES}
    for case in cases:
        group = next(group for group, members in groups.items() if case in members)
        data = encode(case.make(), quality=FAULT_JPEG_QUALITY)
        if args.save:
            (args.save / f"{case.name.replace(':', 'x')}.jpg").write_bytes(data)
        cells = []
        for mode, url in MODES.items():
            response = client.post(url, data=upload(data))
            if response.status_code != 200:
                cells.append(f"ERROR {response.status_code} {response.get_json()}")
                wrong[group, mode] += 1
                continue
            body = response.get_json()
            right = case.is_right(body["labels"])
            wrong[group, mode] += not right
            shown = describe(body) + (f" [{body['mode']}]" if "mode" in body else "")
            cells.append(f"{'ok' if right else 'WRONG'}: {shown}")
        expected = {"occluder": "no mask category", "no_shield": f"no Shield ({case.expected})"}.get(case.kind,
                                                                                                   case.expected)
        rows.append(f"| {case.name} | {expected} | " + " | ".join(cells) + " |")
    elapsed = time.perf_counter() - started
    classifier = app.extensions["maskclassifier"]
    shown = args.model.resolve()
    shown = shown.relative_to(ROOT) if shown.is_relative_to(ROOT) else shown
    print(f"# {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {shown} (sha256 {classifier.sha256[:12]}, "
          f"threshold {classifier.threshold:g}), {len(cases)} fault photos, {elapsed:.0f} s")
    print("| photo | a person says | " + " | ".join(MODES) + " |")
    print("|---|---|" + "---|" * len(MODES))
    print("\n".join(rows))
    for group, members in groups.items():
        if members:
            print(f"wrong, {group}: " + ", ".join(f"{mode} {wrong[group, mode]}/{len(members)}" for mode in MODES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
