"""routeiq-train refuses bad input with one clear line on stderr and exit 2, and writes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness.train_data import FIELDS, make_rows, write_csv
from routeiq_train.cli import main


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    err = capsys.readouterr().err
    assert isinstance(exited.value.code, int)
    return exited.value.code, err


def _train(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--router", "logistic", "--data", str(data), "--out", str(out), *extra]


def _assert_one_line_error(code: int, err: str, *words: str) -> None:
    assert code == 2
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    for word in words:
        assert word in err


def test_missing_columns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_csv(tmp_path / "d.csv", make_rows(50), ("subject", "prompt", "mixtral_8x7b_correct"))
    code, err = _run(_train(data, tmp_path / "a.joblib"), capsys)
    _assert_one_line_error(code, err, "missing column", "gpt_4_1106_correct")
    assert not (tmp_path / "a.joblib").exists()


def test_missing_columns_named_by_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_csv(tmp_path / "d.csv", make_rows(50))
    code, err = _run(_train(data, tmp_path / "a.joblib", "--weak", "llama_correct"), capsys)
    _assert_one_line_error(code, err, "llama_correct")


def test_empty_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "d.csv").write_bytes(b"")
    code, err = _run(_train(tmp_path / "d.csv", tmp_path / "a.joblib"), capsys)
    _assert_one_line_error(code, err, "is empty")


def test_header_without_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_csv(tmp_path / "d.csv", [])
    code, err = _run(_train(data, tmp_path / "a.joblib"), capsys)
    _assert_one_line_error(code, err, "no rows")


def test_empty_prompt_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = make_rows(50)
    rows[10]["prompt"] = "   "
    data = write_csv(tmp_path / "d.csv", rows)
    code, err = _run(_train(data, tmp_path / "a.joblib"), capsys)
    _assert_one_line_error(code, err, "row 11", "empty prompt")


def test_empty_fields_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_csv(tmp_path / "d.csv", make_rows(20))
    with data.open("a") as fh:
        fh.write(",,,\n")
    code, err = _run(_train(data, tmp_path / "a.joblib"), capsys)
    _assert_one_line_error(code, err, "row 21")


def test_short_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_csv(tmp_path / "d.csv", make_rows(20))
    with data.open("a") as fh:
        fh.write("logic,only a prompt\n")
    code, err = _run(_train(data, tmp_path / "a.joblib"), capsys)
    _assert_one_line_error(code, err, "row 21", "fields")


def test_non_boolean_correctness(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = make_rows(50)
    rows[3][FIELDS[3]] = "maybe"
    data = write_csv(tmp_path / "d.csv", rows)
    code, err = _run(_train(data, tmp_path / "a.joblib"), capsys)
    _assert_one_line_error(code, err, "row 4", "gpt_4_1106_correct", "'maybe'", "not a boolean")


def test_single_class(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = make_rows(50)
    for row in rows:
        row[FIELDS[2]] = row[FIELDS[3]] = "True"
    data = write_csv(tmp_path / "d.csv", rows)
    code, err = _run(_train(data, tmp_path / "a.joblib"), capsys)
    _assert_one_line_error(code, err, "single class")
    assert not (tmp_path / "a.joblib").exists()


def test_unknown_router_kind(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_csv(tmp_path / "d.csv", make_rows(50))
    code, err = _run(["train", "--router", "oracle", "--data", str(data), "--out", str(tmp_path / "a")], capsys)
    _assert_one_line_error(code, err, "unknown router kind 'oracle'", "logistic")


def test_bad_holdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_csv(tmp_path / "d.csv", make_rows(50))
    code, err = _run(_train(data, tmp_path / "a.joblib", "--holdout", "1.5"), capsys)
    _assert_one_line_error(code, err, "--holdout")


def test_missing_file_and_missing_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(_train(tmp_path / "nope.csv", tmp_path / "a.joblib"), capsys)
    _assert_one_line_error(code, err, "nope.csv")
    code, err = _run(["train", "--router", "knn"], capsys)
    _assert_one_line_error(code, err, "--data")


def test_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "d.csv").write_bytes(b"subject,prompt,mixtral_8x7b_correct,gpt_4_1106_correct\nx,\xff\xfe,True,False\n")
    code, err = _run(_train(tmp_path / "d.csv", tmp_path / "a.joblib"), capsys)
    _assert_one_line_error(code, err, "UTF-8")


def test_evaluate_refuses_what_is_not_an_artifact(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_csv(tmp_path / "d.csv", make_rows(20))
    (tmp_path / "junk.joblib").write_bytes(b"not a pickle")
    code, err = _run(["evaluate", "--artifact", str(tmp_path / "junk.joblib"), "--data", str(data)], capsys)
    _assert_one_line_error(code, err, "junk.joblib")
    code, err = _run(["evaluate", "--artifact", str(tmp_path / "none.joblib"), "--data", str(data)], capsys)
    _assert_one_line_error(code, err, "no such file")
