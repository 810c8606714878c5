"""CT-RATE multi-abnormality scoring: CT-CLIP threshold, f1_of_means, text answers (hand-worked)."""

import json
from pathlib import Path

import numpy as np
import pytest

from longllava.errors import InputError
from longllava.eval.ct_rate import (CT_RATE_ABNORMALITIES, choose_threshold_ct_clip,
                                    ct_rate_question_id, ct_rate_table_from_answers, f1_of_means,
                                    read_ct_rate_labels, read_ct_rate_prediction_csv, score_ct_rate,
                                    yes_no_from_text)
from longllava.eval.predictions import read_predictions

FIXTURES = Path(__file__).parent / "fixtures" / "eval"
LABELS = FIXTURES / "ct_rate_labels.csv"


def test_abnormalities_in_official_column_order():
    assert len(CT_RATE_ABNORMALITIES) == 18
    assert CT_RATE_ABNORMALITIES[1] == "Arterial wall calcification"
    assert CT_RATE_ABNORMALITIES[9] == "Lung nodule"
    assert CT_RATE_ABNORMALITIES[-1] == "Interlobular septal thickening"


def test_ct_clip_threshold_ties_keep_the_largest():
    # labels 1,1,0,0 with p 0.9,0.4,0.6,0.1 over t = k/99:
    #   k 10..39: TPR 1, FPR 0.5 -> distance 0.5;  k 40..59: distance sqrt(0.5)
    #   k 60..89: TPR 0.5, FPR 0 -> distance 0.5;  k >= 90 or <= 9: distance 1
    # the tie at 0.5 goes to the largest threshold, 89/99
    threshold = choose_threshold_ct_clip(np.array([0.9, 0.4, 0.6, 0.1]), np.array([1, 1, 0, 0]))
    assert threshold == pytest.approx(89 / 99)
    # perfectly separable: any t in [0.3, 0.8) reaches the corner; the largest is 79/99
    assert choose_threshold_ct_clip(np.array([0.8, 0.3, 0.2, 0.1]),
                                    np.array([1, 0, 0, 0])) == pytest.approx(79 / 99)


def test_ct_clip_threshold_needs_both_classes():
    with pytest.raises(InputError, match="both present and absent"):
        choose_threshold_ct_clip(np.array([0.2, 0.7]), np.array([0, 0]))


def test_f1_of_means_reproduces_the_papers_ct_clip_row():
    # LongLLaVA's CT-CLIP row: P 30.4, R 73.8 -> 2PR/(P+R) = 4487.04 / 104.2 = 43.06
    assert f1_of_means(30.4, 73.8) == pytest.approx(4487.04 / 104.2)
    assert 43.0 <= f1_of_means(30.4, 73.8) < 43.1
    # inside the rounding of P and R the paper's 43.0 is reached
    assert round(f1_of_means(30.35, 73.75), 1) == 43.0
    # it differs from the macro F1: classes (P, R) = (0.2, 0.9), (0.6, 0.5) have F1s 0.32727 and
    # 0.54545 (mean 0.43636) but F1 of the means (0.4, 0.7) = 0.56 / 1.1 = 0.50909
    assert f1_of_means(0.4, 0.7) == pytest.approx(0.56 / 1.1)
    assert f1_of_means(0.0, 0.0) == 0.0


@pytest.mark.parametrize("text, expected", [
    ("Yes.", 1), ("yes, although small", 1), ("No", 0), ("Present.", 1), ("Absent", 0),
    ("There is no evidence of it.", 0), ("Emphysema isn't seen.", 0),
    ("Emphysema is present.", 1), ("A nodule is seen in the left lobe.", 1),
    ("1", 1), ("0", 0), ("Possibly.", None), ("", None), ("0.7", None),
])
def test_yes_no_from_text(text, expected):
    assert yes_no_from_text(text) == expected


def _hand_binary_expectations(metrics):
    # 16 abnormalities perfect (100 each); Lung nodule labels 1,1,0,0 vs 1,1,1,0: acc 75, P 2/3,
    # R 1, F1 0.8; Emphysema labels 1,0,0,0 vs 0,0,0,0: acc 75, P = R = F1 = 0 (0/0 -> 0)
    precision, recall = (1600 + 200 / 3) / 18, (1600 + 100) / 18
    assert metrics["accuracy"] == pytest.approx((1600 + 75 + 75) / 18)
    assert metrics["precision"] == pytest.approx(precision)
    assert metrics["recall"] == pytest.approx(recall)
    assert metrics["f1_macro"] == pytest.approx((1600 + 80) / 18)
    assert metrics["f1_of_means"] == pytest.approx(2 * precision * recall / (precision + recall))
    assert "auroc" not in metrics
    nodule = metrics["per_abnormality"]["Lung nodule"]
    assert (nodule["accuracy"], nodule["recall"], nodule["f1"]) == pytest.approx((75, 100, 80))


def test_binary_csv_fixture():
    result = score_ct_rate(read_ct_rate_labels(LABELS),
                           read_ct_rate_prediction_csv(FIXTURES / "ct_rate_pred_binary.csv"))
    assert result.protocol == "ct-rate-yes-no"
    _hand_binary_expectations(result.metrics)
    assert result.counts["decisions"] == 72 and result.counts["positives"] == 19
    assert len(result.items) == 72


def test_text_answers_fixture_matches_the_binary_decisions():
    table = ct_rate_table_from_answers(read_predictions(FIXTURES / "ct_rate_answers.jsonl"))
    result = score_ct_rate(read_ct_rate_labels(LABELS), table)
    _hand_binary_expectations(result.metrics)  # "Possibly." sits where the decision is 0 anyway
    assert result.counts["unparseable"] == 1
    unread = [item for item in result.items if "unparseable" in item.detail]
    assert [item.id for item in unread] == [ct_rate_question_id("valid_2_a_1.nii.gz", "Emphysema")]


def test_probability_csv_fixture():
    result = score_ct_rate(read_ct_rate_labels(LABELS),
                           read_ct_rate_prediction_csv(FIXTURES / "ct_rate_pred_probabilities.csv"))
    assert result.protocol == "ct-clip-threshold"
    nodule = result.metrics["per_abnormality"]["Lung nodule"]
    # p 0.9,0.4,0.6,0.1 for labels 1,1,0,0: threshold 89/99 -> decisions 1,0,0,0
    assert nodule["threshold"] == pytest.approx(89 / 99)
    assert (nodule["accuracy"], nodule["precision"], nodule["recall"]) == pytest.approx((75, 100, 50))
    assert nodule["auroc"] == pytest.approx(75.0)  # 3 of 4 positive-negative pairs ordered
    assert result.metrics["per_abnormality"]["Emphysema"]["threshold"] == pytest.approx(79 / 99)
    assert result.metrics["auroc"] == pytest.approx((1700 + 75) / 18)
    assert result.metrics["recall"] == pytest.approx((1700 + 50) / 18)
    assert result.metrics["precision"] == pytest.approx(100.0)


def _csv(tmp_path, rows, header=None, name="t.csv"):
    header = header or ["VolumeName", *CT_RATE_ABNORMALITIES]
    lines = [",".join(header)] + [",".join(str(cell) for cell in row) for row in rows]
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_calcification_alias_and_volume_names_without_suffix(tmp_path):
    header = ["VolumeName", *CT_RATE_ABNORMALITIES]
    header[2] = "Calcification"  # CT-CLIP's scripts' name for column 1
    labels = read_ct_rate_labels(_csv(tmp_path, [["valid_9_a_1.nii.gz", *[1] * 18],
                                                 ["valid_9_a_2.nii.gz", *[0] * 18]], header))
    predictions = read_ct_rate_prediction_csv(_csv(tmp_path, [["valid_9_a_1", *[1] * 18],
                                                              ["valid_9_a_2", *[0] * 18]],
                                                   name="p.csv"))
    assert score_ct_rate(labels, predictions).metrics["accuracy"] == 100.0


def test_bad_inputs(tmp_path):
    with pytest.raises(InputError, match="must be 0 or 1"):
        read_ct_rate_labels(_csv(tmp_path, [["v1", *[0.5] * 18]]))
    with pytest.raises(InputError, match="lacks the column"):
        read_ct_rate_labels(_csv(tmp_path, [["v1", *[0] * 17]],
                                 ["VolumeName", *CT_RATE_ABNORMALITIES[:17]]))
    with pytest.raises(InputError, match="occurs twice"):
        read_ct_rate_labels(_csv(tmp_path, [["v1", *[0] * 18], ["v1.nii.gz", *[1] * 18]]))
    with pytest.raises(InputError, match=r"in \[0, 1\]"):
        read_ct_rate_prediction_csv(_csv(tmp_path, [["v1", *[2] * 18]]))
    labels = read_ct_rate_labels(_csv(tmp_path, [["v1", *[1] * 18], ["v2", *[0] * 18]]))
    only_v1 = read_ct_rate_prediction_csv(_csv(tmp_path, [["v1", *[1] * 18]], name="p.csv"))
    with pytest.raises(InputError, match="no predictions for 1 of 2"):
        score_ct_rate(labels, only_v1)
    extra = read_ct_rate_prediction_csv(_csv(tmp_path, [["v1", *[1] * 18], ["v2", *[0] * 18],
                                                        ["v3", *[0] * 18]], name="p.csv"))
    with pytest.raises(InputError, match="not in the labels"):
        score_ct_rate(labels, extra)
    one_class = read_ct_rate_labels(_csv(tmp_path, [["v1", *[0] * 18], ["v2", *[0] * 18]]))
    probabilities = read_ct_rate_prediction_csv(_csv(tmp_path, [["v1", *[0.2] * 18],
                                                                ["v2", *[0.7] * 18]], name="p.csv"))
    with pytest.raises(InputError, match="absent in every volume"):
        score_ct_rate(one_class, probabilities)


def test_bad_text_answers(tmp_path):
    path = tmp_path / "answers.jsonl"
    path.write_text(json.dumps({"id": "v1", "text": "yes"}) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match="does not name a volume"):
        ct_rate_table_from_answers(read_predictions(path))
    path.write_text(json.dumps({"id": "v1::Lung nodules", "text": "yes"}) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match="not a CT-RATE abnormality"):
        ct_rate_table_from_answers(read_predictions(path))
    path.write_text(json.dumps({"id": "v1::Lung nodule", "text": "yes"}) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match="has no answer for Medical material"):
        ct_rate_table_from_answers(read_predictions(path))
    path.write_text("\n".join(json.dumps({"volume": "v1", "abnormality": "Emphysema", "id": i,
                                          "text": "no"}) for i in range(2)) + "\n",
                    encoding="utf-8")
    with pytest.raises(InputError, match="second answer"):
        ct_rate_table_from_answers(read_predictions(path))
