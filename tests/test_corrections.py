"""The corrections file (maskclassifier/core/corrections.py) and `--corrections` in train and evaluate."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from datasets import write_labelled_set
from helpers import ROOT, TINY_OPTIONS
from maskclassifier.core import corrections
from maskclassifier.core.corrections import CorrectionsError, Recorder
from maskclassifier.core.sidecar import sha256_file

VOCAB = ["-", "Cloth", "Gas", "KN95", "Medical", "No_mask!", "Shield"]
ROWS = [{"fname": "a.jpg", "labels": "Cloth", "source": "x"},
        {"fname": "b.jpg", "labels": "Medical", "source": "y"},
        {"fname": "c.jpg", "labels": "KN95", "source": "x"},
        {"fname": "d.jpg", "labels": "Shield Medical", "source": "y"}]


def write(path, text: str):
    path.write_text(text)
    return path


def test_the_last_row_per_fname_wins_and_apply_counts(tmp_path):
    path = write(tmp_path / "c.csv", "fname,old_labels,labels,action,reason,time\n"
                 "a.jpg,Cloth,Medical,relabel,pleated,2026-11-30T14:00:00+00:00\n"
                 "b.jpg,Medical,,delete,a drawing,2026-11-30T14:01:00+00:00\n"
                 "a.jpg,Cloth,KN95 Shield,relabel,second look,2026-11-30T14:02:00+00:00\n"
                 "c.jpg,KN95,KN95,keep,,2026-11-30T14:03:00+00:00\n"
                 "d.jpg,Shield Medical,Medical Shield,relabel,same set,2026-11-30T14:04:00+00:00\n")
    found = corrections.read(path, VOCAB)
    assert list(found) == ["b.jpg", "a.jpg", "c.jpg", "d.jpg"]  # in the order last decided
    assert found["a.jpg"].labels == ("KN95", "Shield") and found["a.jpg"].line == 4
    applied = corrections.apply(ROWS, found)
    assert applied.rows == [{"fname": "a.jpg", "labels": "KN95 Shield", "source": "x"}, ROWS[2], ROWS[3]]
    assert applied.counts() == {"relabelled": 1, "deleted": 1, "kept": 2}
    assert ROWS[0]["labels"] == "Cloth", "the input rows are not changed"
    info = corrections.describe(path, applied)
    assert info == {"file": str(path), "sha256": sha256_file(path), "relabelled": 1, "deleted": 1, "kept": 2}


def test_a_plain_fname_labels_reason_file_reads_as_relabels(tmp_path):
    """Issue 17's label fixes: overrides with a reason, no action column."""
    path = write(tmp_path / "fixes.csv", "fname,labels,reason\nb.jpg,Cloth,review: model right\n")
    applied = corrections.apply(ROWS, corrections.read(path, VOCAB))
    assert applied.rows[1]["labels"] == "Cloth" and applied.counts() == {"relabelled": 1, "deleted": 0, "kept": 0}


@pytest.mark.parametrize("body,message", [
    ("a.jpg,,Mask,relabel,,\n", "line 2: unknown category Mask for a.jpg"),
    ("a.jpg,,Cloth,relabel,,\nb.jpg,,Cloth,rename,,\n", "line 3: unknown action 'rename'"),
    ("a.jpg,,,relabel,,\n", "line 2: relabel of a.jpg to no label; use action delete"),
    (",,Cloth,relabel,,\n", "line 2 has no fname"),
    ("a.jpg,,Cloth,relabel,,,extra\n", "line 2 has more values than the header"),
])
def test_a_bad_row_is_one_error_naming_its_line(tmp_path, body, message):
    path = write(tmp_path / "c.csv", ",".join(corrections.COLUMNS) + "\n" + body)
    with pytest.raises(CorrectionsError, match=message):
        corrections.read(path, VOCAB)


def test_unknown_fname_missing_file_and_column_are_refused(tmp_path):
    path = write(tmp_path / "c.csv", "fname,labels\na.jpg,Cloth\nzzz.jpg,Cloth\nyyy.jpg,Gas\n")
    with pytest.raises(CorrectionsError, match=r"line 3: zzz.jpg is not in the labelled CSV \(1 more such lines\)"):
        corrections.apply(ROWS, corrections.read(path, VOCAB))
    assert corrections.apply(ROWS, corrections.read(path, VOCAB), also_known=["zzz.jpg", "yyy.jpg"]).relabelled == 0
    with pytest.raises(CorrectionsError, match="corrections file not found"):
        corrections.read(tmp_path / "missing.csv")
    with pytest.raises(CorrectionsError, match="has no column labels"):
        corrections.read(write(tmp_path / "bad.csv", "fname,label\na.jpg,Cloth\n"))


def test_the_projects_corrections_file_is_one_looked_at_decision_per_image_with_a_reason():
    """recipes/masks-corrections.csv (what `train --corrections` applies to the shared dataset) reads with the
    model's categories, and every row is a relabel written by hand: a reason saying what the photo shows, the old
    labels as the dataset has them, new labels that differ, one row per image (no changed mind left in)."""
    path = ROOT / "recipes" / "masks-corrections.csv"
    found = corrections.read(path, VOCAB)
    _, rows, _ = corrections.read_csv_rows(path, CorrectionsError)
    assert len(found) == len(rows)  # one row per fname
    for fix in found.values():
        assert fix.action == "relabel" and fix.reason and fix.old_labels, fix
        assert set(fix.labels) != set(fix.old_labels), fix
        assert fix.fname.startswith("images/") and fix.fname.endswith(".jpg"), fix


def test_the_recorder_appends_with_a_header_and_undoes_only_its_own_rows(tmp_path):
    path = tmp_path / "c.csv"
    first = Recorder(path)
    first.record("a.jpg", ["Cloth"], ["Medical"], "relabel", "pleated")
    second = Recorder(path)  # a restart: the header is not written twice
    second.record("b.jpg", ["Medical"], [], "delete")
    second.record("c.jpg", ["KN95"], ["KN95"], "keep")
    assert second.undo_last() is True
    assert second.undo_last() is True
    assert second.undo_last() is False, "rows of an earlier session stay"
    lines = path.read_text().splitlines()
    assert lines[0] == "fname,old_labels,labels,action,reason,time" and len(lines) == 2
    assert lines[1].startswith("a.jpg,Cloth,Medical,relabel,pleated,2")
    assert list(corrections.read(path, VOCAB)) == ["a.jpg"]


def elsewhere_env() -> dict:
    return {"cwd": ROOT, "capture_output": True, "text": True, "timeout": 900}


@pytest.mark.slow  # trains for real
def test_train_and_evaluate_apply_a_corrections_file_and_record_it(tmp_path):
    csv_path = write_labelled_set(tmp_path / "data", per_category=4)
    original = csv_path.read_bytes()
    fixes = write(tmp_path / "fixes.csv", "fname,old_labels,labels,action,reason,time\n"
                  "images/1-1.jpg,Cloth,Cloth Shield,relabel,a visor too,\n"  # training rows (i % 3 != 0)
                  "images/2-1.jpg,Gas,,delete,not a gas mask,\n"
                  "images/3-1.jpg,KN95,KN95,keep,,\n")
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "maskclassifier.train", "--csv", str(csv_path), "--out", str(out),
                             "--corrections", str(fixes), *TINY_OPTIONS, "--lr", "1e-3"], **elsewhere_env())
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"corrections {fixes}: 1 image(s) relabelled, 1 left out, 1 kept as labelled" in result.stdout
    dataset = json.loads((out / "export.json").read_text())["training"]["dataset"]
    assert dataset["corrections"] == {"file": str(fixes), "sha256": sha256_file(fixes), "relabelled": 1,
                                      "deleted": 1, "kept": 1}
    assert dataset["images"] == 8 * 4 - 1
    card = (out / "MODEL_CARD.md").read_text()
    assert f"Labels corrected by `{fixes}` (sha256 `{sha256_file(fixes)}`): 1 image(s) relabelled, 1 left out" in card
    assert csv_path.read_bytes() == original, "the CSV is never written"

    report_path = tmp_path / "predictions.csv"
    evaluated = subprocess.run([sys.executable, "-m", "maskclassifier.evaluate", "--csv", str(csv_path), "--model",
                                str(out / "export.pkl"), "--corrections", str(fixes), "--predictions",
                                str(report_path)], **elsewhere_env())
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert f"corrections {fixes}: 1 image(s) relabelled, 1 left out, 1 kept as labelled" in evaluated.stderr
    predicted = {line.split(",")[0]: line.split(",")[1] for line in report_path.read_text().splitlines()[1:]}
    assert predicted["images/1-1.jpg"] == "Cloth Shield" and "images/2-1.jpg" not in predicted

    bad = write(tmp_path / "bad.csv", "fname,labels\nimages/1-1.jpg,Cloth\nimages/nope.jpg,Gas\n")
    refused = subprocess.run([sys.executable, "-m", "maskclassifier.evaluate", "--csv", str(csv_path), "--model",
                              str(out / "export.pkl"), "--corrections", str(bad)], **elsewhere_env())
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.strip() == f"error: {bad} line 3: images/nope.jpg is not in the labelled CSV"
