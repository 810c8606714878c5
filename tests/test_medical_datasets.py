"""Dataset readers on small fixtures in the real formats, malformed records, and the CT-RATE HU decision."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from longllava.core.records import Record
from longllava.domains.medical.datasets import (
    CT_RATE_ABNORMALITIES,
    ct_rate_needs_rescale,
    ct_rate_questions,
    ct_rate_report_record,
    load_ct_rate_volume,
    read_ct_rate,
    read_llava_med_vqa,
    read_multiple_choice_vqa,
    read_pubmedvision,
)
from longllava.errors import InputError

FIXTURES = Path(__file__).parent / "fixtures" / "medical"
PMV = FIXTURES / "pubmedvision"
RAD = FIXTURES / "vqa_rad"
MC = FIXTURES / "huatuo_mc"
CT_RATE = FIXTURES / "ct_rate"


def _edited(tmp_path: Path, source: Path, edit) -> Path:
    records = json.loads(source.read_text())
    edit(records)
    out = tmp_path / source.name
    out.write_text(json.dumps(records))
    return out


# --- PubMedVision ---------------------------------------------------------------------------------


def test_pubmedvision_records_get_placeholders_and_resolved_images():
    records = list(read_pubmedvision(PMV / "PubMedVision_Alignment_VQA.json", PMV))
    assert [r.id for r in records] == ["PMC001_fig1", "PMC002_fig2", "PMC003_fig3"]
    assert all(isinstance(r, Record) for r in records)
    first, two, placed = records
    assert first.images == [str(PMV / "images" / "pmc_001_fig1.jpg.png")]
    assert first.conversations[0]["value"] == "<image>\nWhat imaging modality is shown and what does it reveal?"
    assert first.meta == {"dataset": "PubMedVision", "modality": "Computed Tomography", "body_part": "Abdomen"}
    assert first.source.endswith("PubMedVision_Alignment_VQA.json#0")
    assert two.num_placeholders() == 2 and two.conversations[0]["value"].startswith("<image>\n<image>\nCompare")
    assert len(two.conversations) == 4 and two.conversations[2]["value"] == "Which stain highlights the glands?"
    assert placed.conversations[0]["value"] == "<image>\nDescribe the chest radiograph."  # unchanged
    assert placed.question == "Describe the chest radiograph."
    assert placed.answer == "Frontal chest radiograph with a right lower lobe opacity."


@pytest.mark.parametrize(
    "edit, field, problem",
    [
        (lambda r: r[0].pop("id"), "id", "missing"),
        (lambda r: r[0].update(image="images/absent.png"), "image", "image file not found"),
        (lambda r: r[0].update(image=[3]), "image", "expected a non-empty path or list"),
        (lambda r: r[0].update(conversations="hello"), "conversations", "expected list, got str"),
        (lambda r: r[0]["conversations"].__setitem__(0, {"from": "bot", "value": "x"}), "conversations", "turn 0 must be"),
        (lambda r: r[0]["conversations"].reverse(), "conversations", "first turn must be from 'human'"),
        (lambda r: r[0]["conversations"][0].update(value="<image><image> two?"), "conversations", "2 <image> placeholder"),
        (lambda r: r[0].update(modality=5), "modality", "expected a string"),
        (lambda r: r.__setitem__(0, ["not", "a", "dict"]), "<record>", "expected a JSON object"),
    ],
)
def test_malformed_pubmedvision_records_name_file_record_and_field(tmp_path, edit, field, problem):
    path = _edited(tmp_path, PMV / "PubMedVision_Alignment_VQA.json", edit)
    with pytest.raises(InputError, match=rf"PubMedVision_Alignment_VQA\.json record 0: field '{field}': .*{problem}"):
        list(read_pubmedvision(path, PMV))


def test_skip_bad_collects_malformed_records_into_a_report(tmp_path):
    def edit(records):
        records[0]["image"] = ["images/absent.png"]
        records[2].pop("conversations")

    stream = read_pubmedvision(_edited(tmp_path, PMV / "PubMedVision_Alignment_VQA.json", edit), PMV, skip_bad=True)
    assert [r.id for r in stream] == ["PMC002_fig2"]
    summary = stream.errors.summary()
    assert summary["num_bad"] == 2
    assert "record 0: field 'image'" in summary["bad"][0] and "record 2: field 'conversations': missing" in summary["bad"][1]
    assert [r.id for r in stream] == ["PMC002_fig2"] and stream.errors.summary()["num_bad"] == 2  # a second pass


def test_unreadable_dataset_files(tmp_path):
    (tmp_path / "broken.json").write_text('[{"id": 1,]')
    with pytest.raises(InputError, match=r"broken\.json: invalid JSON at line 1"):
        list(read_pubmedvision(tmp_path / "broken.json", PMV))
    (tmp_path / "object.json").write_text('{"id": 1}')
    with pytest.raises(InputError, match="expected a JSON list of records, got a dict"):
        list(read_pubmedvision(tmp_path / "object.json", PMV))
    with pytest.raises(InputError, match="no such dataset file"):
        list(read_pubmedvision(tmp_path / "absent.json", PMV))


# --- VQA-RAD / PathVQA: LLaVA-Med and multiple choice ---------------------------------------------


def test_llava_med_test_format_with_misspelled_key_and_answer_types():
    records = list(read_llava_med_vqa(RAD / "test.json", RAD / "images"))
    assert [r.id for r in records] == ["0", "1", "2"]
    assert [r.meta["answer_type"] for r in records] == ["CLOSED", "OPEN", "CLOSED"]
    assert records[0].question.startswith("Are regions of the brain infarcted?\nPlease choose from")
    assert records[0].answer == "yes"
    assert records[1].conversations[0]["value"] == "<image>\nWhat organ system is shown?"  # from 'conversatons'
    assert records[1].answer == "gastrointestinal"
    assert records[2].num_placeholders() == 1
    assert records[1].images == [str(RAD / "images" / "synpic29265.jpg.png")]


def test_llava_med_jsonl_and_bad_answer_type(tmp_path):
    lines = json.loads((RAD / "test.json").read_text())
    (tmp_path / "test.jsonl").write_text("\n".join(json.dumps(r) for r in lines))
    assert len(list(read_llava_med_vqa(tmp_path / "test.jsonl", RAD / "images"))) == 3
    path = _edited(tmp_path, RAD / "test.json", lambda r: r[1].update(answer_type="MAYBE"))
    with pytest.raises(InputError, match=r"record 1: field 'answer_type': expected OPEN or CLOSED, got 'MAYBE'"):
        list(read_llava_med_vqa(path, RAD / "images"))
    path = _edited(tmp_path, RAD / "test.json", lambda r: r[0]["conversations"].pop())
    with pytest.raises(InputError, match=r"record 0: field 'conversations': no 'gpt' turn"):
        list(read_llava_med_vqa(path, RAD / "images"))


def test_multiple_choice_format_options_letters_and_open_questions():
    records = list(read_multiple_choice_vqa(MC / "medical_multimodel_evaluation_data.json", MC))
    closed, parsed, open_question = records
    assert closed.meta["options"] == ["yes", "no"] and closed.meta["answer_letter"] == "A"
    assert closed.meta["dataset"] == "VQA-RAD" and closed.answer == "yes"
    assert closed.conversations[0]["value"] == "<image>\nAre regions of the brain infarcted?"
    assert parsed.meta["options"] == ["adenocarcinoma", "normal mucosa", "lymphoma", "granuloma"]
    assert parsed.meta["answer"] == "adenocarcinoma" and parsed.meta["answer_letter"] == "A"
    assert parsed.meta["subset"] == "test" and parsed.id == "medical_multimodel_evaluation_data-1"
    assert open_question.meta["options"] == [] and open_question.meta["answer_letter"] is None
    assert open_question.meta["question_type"] == "open"


@pytest.mark.parametrize(
    "edit, field, problem",
    [
        (lambda r: r[1].update(answer="carcinoid"), "answer", "'carcinoid' is not one of the options"),
        (lambda r: r[1].update(options="['a', 'b'"), "options", "not a Python list literal"),
        (lambda r: r[1].update(options=[1, 2]), "options", "expected a list of option strings"),
        (lambda r: r[0].pop("question"), "question", "missing"),
        (lambda r: r[0].pop("dataset"), "dataset", "missing"),
        (lambda r: r[0].update(image=["images/none.png"]), "image", "image file not found"),
    ],
)
def test_malformed_multiple_choice_records(tmp_path, edit, field, problem):
    path = _edited(tmp_path, MC / "medical_multimodel_evaluation_data.json", edit)
    with pytest.raises(InputError, match=rf"record \d: field '{field}': .*{problem}"):
        list(read_multiple_choice_vqa(path, MC))


# --- CT-RATE --------------------------------------------------------------------------------------


def test_ct_rate_items_labels_metadata_and_reports():
    items = list(read_ct_rate(CT_RATE))
    assert [i.volume_name for i in items] == ["valid_1_a_1.nii.gz", "valid_2_a_1.nii.gz", "valid_2_b_2.nii.gz"]
    first = items[0]
    assert first.volume_path == CT_RATE / "dataset/valid_fixed/valid_1/valid_1_a/valid_1_a_1.nii.gz"
    assert list(first.labels) == list(CT_RATE_ABNORMALITIES) and len(CT_RATE_ABNORMALITIES) == 18
    assert [a for a, v in first.labels.items() if v] == ["Medical material", "Cardiomegaly", "Emphysema", "Lung nodule"]
    assert first.xy_spacing_mm == (0.75, 0.75) and first.z_spacing_mm == 1.5
    assert (first.rescale_slope, first.rescale_intercept) == (1.0, -1024.0)
    assert items[1].rescale_intercept == -8192.0
    assert first.report["Impressions_EN"] == "Cardiomegaly. Emphysema. Lung nodule."
    assert items[1].report["ClinicalInformation_EN"] == 'Dyspnea, "rule out" effusion.'


def test_ct_rate_questions_one_per_abnormality():
    item = next(iter(read_ct_rate(CT_RATE)))
    questions = ct_rate_questions(item)
    assert len(questions) == 18
    assert [q.meta["abnormality"] for q in questions] == list(CT_RATE_ABNORMALITIES)
    cardiomegaly = questions[2]
    assert cardiomegaly.question == "Is there cardiomegaly in this chest CT volume? Answer yes or no."
    assert cardiomegaly.answer == "yes" and questions[1].answer == "no"
    assert cardiomegaly.images == [str(item.volume_path)] and cardiomegaly.num_placeholders() == 1
    assert cardiomegaly.meta["answer_type"] == "CLOSED" and cardiomegaly.meta["image_kind"] == "ct_volume"
    assert [q.answer for q in questions].count("yes") == 4
    report = ct_rate_report_record(item)
    assert report.answer.startswith("Findings: Heart size increased.") and "Impression: Cardiomegaly." in report.answer


def _phantom_hu() -> np.ndarray:
    """The fixtures' phantom as loaded: written RAS, so rows and columns come out flipped."""
    hu = np.full((6, 16, 16), -1024, np.int16)
    hu[:, 3:13, 2:14] = 40
    hu[:, 5:11, 3:7] = -850
    hu[:, 5:11, 9:13] = -850
    hu[:, 11:13, 7:9] = 900
    return hu[:, ::-1, ::-1]


def test_ct_rate_volumes_come_out_in_hu_whether_raw_or_fixed():
    items = list(read_ct_rate(CT_RATE))
    expected = _phantom_hu()
    applied = []
    for item in items:
        volume = load_ct_rate_volume(item)
        np.testing.assert_array_equal(volume.hu, expected)
        assert volume.hu.dtype == np.int16
        assert volume.spacing_mm == (1.5, 0.75, 0.75)  # from the metadata CSV, also for blank headers
        np.testing.assert_allclose(np.diff(volume.slice_z_mm), 1.5)
        applied.append(volume.metadata["ct_rate_rescale_applied"])
    assert applied == [False, True, True]  # the fixed volume is not shifted a second time


def test_ct_rate_header_scaling_is_not_applied_twice(tmp_path):
    root = tmp_path / "ct_rate"
    shutil.copytree(CT_RATE, root)
    path = root / "dataset/valid_fixed/valid_2/valid_2_a/valid_2_a_1.nii.gz"
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[112:120] = np.array([1.0, -8192.0], dtype="<f4").tobytes()  # the header itself carries the intercept
    path.write_bytes(gzip.compress(bytes(raw)))
    item = list(read_ct_rate(root))[1]
    volume = load_ct_rate_volume(item)
    assert volume.metadata["nifti_scl_inter"] == -8192.0 and volume.metadata["ct_rate_rescale_applied"] is False
    np.testing.assert_array_equal(volume.hu, _phantom_hu())


def test_ct_rate_rescale_decision_rules():
    assert ct_rate_needs_rescale(7168, header_scaled=False, slope=1, intercept=-8192, volume="v") is True
    assert ct_rate_needs_rescale(0, header_scaled=False, slope=1, intercept=-1024, volume="v") is True
    assert ct_rate_needs_rescale(-1024, header_scaled=False, slope=1, intercept=-8192, volume="v") is False
    assert ct_rate_needs_rescale(7168, header_scaled=True, slope=1, intercept=-8192, volume="v") is False
    with pytest.raises(InputError, match="v: values start at 10.*neither raw CT values nor HU"):
        ct_rate_needs_rescale(10, header_scaled=False, slope=1, intercept=0, volume="v")


def _ct_rate_copy(tmp_path: Path) -> Path:
    root = tmp_path / "ct_rate"
    shutil.copytree(CT_RATE, root)
    return root


def test_malformed_ct_rate_rows_name_the_csv_row_and_field(tmp_path):
    root = _ct_rate_copy(tmp_path)
    labels = root / "multi_abnormality_labels/valid_predicted_labels.csv"
    labels.write_text(labels.read_text().replace("valid_2_b_2.nii.gz,0,0", "valid_2_b_2.nii.gz,0,2"))
    metadata = root / "metadata/validation_metadata.csv"
    metadata.write_text(metadata.read_text().replace('valid_2_a_1.nii.gz,SIEMENS,F,061Y,16,16,6,"[0.75, 0.75]"', 'valid_2_a_1.nii.gz,SIEMENS,F,061Y,16,16,6,0.75 mm'))
    (root / "dataset/valid_fixed/valid_1/valid_1_a/valid_1_a_1.nii.gz").unlink()
    with pytest.raises(InputError, match=r"valid_predicted_labels\.csv record 0 \(valid_1_a_1\.nii\.gz\): field 'VolumeName': volume file not found"):
        list(read_ct_rate(root))
    stream = read_ct_rate(root, skip_bad=True)
    assert list(stream) == []
    bad = stream.errors.summary()["bad"]
    assert "field 'XYSpacing': expected a list like '[0.75, 0.75]'" in bad[1]
    assert "field 'Arterial wall calcification': expected label 0 or 1, got '2'" in bad[2]


def test_ct_rate_missing_files_and_columns(tmp_path):
    root = _ct_rate_copy(tmp_path)
    (root / "radiology_text_reports/validation_reports.csv").unlink()
    with pytest.raises(InputError, match=r"validation_reports\.csv: CT-RATE file not found"):
        list(read_ct_rate(root))
    labels = root / "multi_abnormality_labels/valid_predicted_labels.csv"
    labels.write_text(labels.read_text().replace("Emphysema", "Emphysem"))
    with pytest.raises(InputError, match="missing column\\(s\\) Emphysema"):
        list(read_ct_rate(root))
    with pytest.raises(InputError, match="split must be one of valid, train"):
        read_ct_rate(root, split="test")
