"""Task data: readers for every format, label indexing, splits and caps, and one-line errors for bad data."""

from __future__ import annotations

import json

import pytest

from conftest import ROOT, SHARED_DATA
from core.config import TaskConfig, load_config, parse_config
from core.data import DataError, load_demo_tasks, load_task, load_tasks

ROWS = [("the match went to extra time", "sports"), ("a new phone with a bigger screen", "tech"),
        ("the striker scored twice", "sports"), ("the laptop boots in seconds", "tech"),
        ("the team lost at home", "sports"), ("this app drains the battery", "tech")]


def write_csv(path, rows, header=("text", "label"), sep=","):
    lines = [sep.join(header)] + [sep.join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def task(train, validation=None, **options) -> TaskConfig:
    return TaskConfig(train=str(train), validation=str(validation) if validation else None, **options)


def error_of(config: TaskConfig, name: str = "topic") -> str:
    with pytest.raises(DataError) as caught:
        load_task(name, config)
    message = str(caught.value)
    assert "\n" not in message, message
    return message


# ---- readers --------------------------------------------------------------------------------

def _write(fmt, path, rows):
    import pandas as pd

    records = [{"text": t, "label": lab} for t, lab in rows]
    if fmt == "csv":
        pd.DataFrame(records).to_csv(path, index=False)
    elif fmt == "tsv":
        pd.DataFrame(records).to_csv(path, index=False, sep="\t")
    elif fmt == "json":
        path.write_text(json.dumps(records), encoding="utf-8")
    elif fmt == "jsonl":
        path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    elif fmt == "parquet":
        pd.DataFrame(records).to_parquet(path)


@pytest.mark.parametrize("fmt", ["csv", "tsv", "json", "jsonl", "parquet"])
def test_every_reader(fmt, tmp_path):
    rows = [("Hello, world: commas stay inside the text", "sports"), *ROWS[1:]]
    train, val = tmp_path / f"train.{fmt}", tmp_path / f"val.{fmt}"
    _write(fmt, train, rows)
    _write(fmt, val, rows[:2])
    data = load_task("topic", task(train, val))
    assert data.labels == ["sports", "tech"]
    assert data.train_texts == [t for t, _ in rows]
    assert data.train_labels == [0, 1, 0, 1, 0, 1]
    assert data.val_texts == [rows[0][0], rows[1][0]] and data.val_labels == [0, 1]
    assert data.class_counts() == {"sports": 3, "tech": 3}


def test_na_and_null_texts_stay_text(tmp_path):
    texts = ["NA", "null", "None", "N/A", "nan", "NULL"]
    rows = [(t, "ab"[i % 2]) for i, t in enumerate(texts)]
    data = load_task("t", task(write_csv(tmp_path / "t.csv", rows), write_csv(tmp_path / "v.csv", rows)))
    assert data.train_texts == texts and data.val_texts == texts


def test_integer_labels_keep_numeric_order(tmp_path):
    rows = [("first example", 10), ("second example", 2), ("third example", 1), ("fourth example", 2),
            ("fifth example", 10), ("sixth example", 1)]
    data = load_task("t", task(write_csv(tmp_path / "t.csv", rows), write_csv(tmp_path / "v.csv", rows[:3])))
    assert data.labels == ["1", "2", "10"]  # numeric order, not "1", "10", "2"
    assert data.train_labels == [2, 1, 0, 1, 2, 0]
    assert data.val_labels == [2, 1, 0]


def test_string_labels_are_sorted_and_stripped(tmp_path):
    rows = [("one text", "positive"), ("two text", "negative"), ("three text", "neutral"),
            ("four text", "negative")]
    data = load_task("t", task(write_csv(tmp_path / "t.csv", rows), write_csv(tmp_path / "v.csv", rows[:2])))
    assert data.labels == ["negative", "neutral", "positive"]
    assert data.train_labels == [2, 0, 1, 0]


def test_two_tasks_from_one_table(tmp_path):
    rows = [(t, lab, "pos" if i % 3 else "neg") for i, (t, lab) in enumerate(ROWS)]
    path = write_csv(tmp_path / "both.csv", rows, header=("text", "topic", "mood"))
    config = parse_config({"tasks": {
        "topic": {"train": path, "validation": path, "label_column": "topic"},
        "sentiment": {"train": path, "validation": path, "label_column": "mood"},
    }})
    tasks = load_tasks(config)
    assert list(tasks) == ["topic", "sentiment"]
    assert tasks["topic"].train_texts == tasks["sentiment"].train_texts == [r[0] for r in rows]
    assert tasks["topic"].labels == ["sports", "tech"] and tasks["sentiment"].labels == ["neg", "pos"]
    assert tasks["sentiment"].train_labels == [0, 1, 1, 0, 1, 1]


def test_seeded_split_without_validation_file(tmp_path):
    rows = [(f"sentence number {i}", "ab"[i % 2]) for i in range(50)]
    path = write_csv(tmp_path / "all.csv", rows)
    first = load_task("t", task(path, validation_fraction=0.2))
    again = load_task("t", task(path, validation_fraction=0.2))
    other = load_task("t", task(path, validation_fraction=0.2), seed=1)
    assert len(first.val_texts) == 10 and len(first.train_texts) == 40
    assert sorted(first.train_texts + first.val_texts) == sorted(r[0] for r in rows)
    assert not set(first.train_texts) & set(first.val_texts)
    assert first.val_texts == again.val_texts  # the same seed gives the same split
    assert first.val_texts != other.val_texts
    assert first.val_texts != [r[0] for r in rows][:10]  # shuffled, not the first rows


def test_caps_are_seeded_and_keep_every_class(tmp_path):
    rows = sorted(((f"example {i}", "abcd"[i % 4]) for i in range(400)), key=lambda r: r[1])  # sorted by label
    path = write_csv(tmp_path / "sorted.csv", rows)
    data = load_task("t", task(path, path, max_train_examples=40, max_validation_examples=8))
    assert len(data.train_texts) == 40 and len(data.val_texts) == 8
    assert set(data.train_labels) == {0, 1, 2, 3}
    assert load_task("t", task(path, path, max_train_examples=40)).train_texts == data.train_texts


def test_demo_tasks():
    tasks = load_demo_tasks()
    assert tasks["topic"].labels == ["Food", "Sports", "Technology", "Travel"]
    assert tasks["sentiment"].labels == ["negative", "neutral", "positive"]
    assert len(tasks["topic"].train_texts) == 1115 and len(tasks["topic"].val_texts) == 276
    assert load_tasks(parse_config({}))["topic"].train_texts == tasks["topic"].train_texts


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="needs ../shared/data")
def test_agnews_and_sst2_from_the_example_config(monkeypatch):
    monkeypatch.chdir(ROOT)  # paths in configs are relative to the project root
    config = load_config(ROOT / "examples" / "agnews_sst2.yaml")
    tasks = load_tasks(config)
    topic, sentiment = tasks["topic"], tasks["sentiment"]
    assert topic.labels == ["Business", "Sci/Tech", "Sports", "World"]
    assert sentiment.labels == ["negative", "positive"]
    for data in tasks.values():
        assert len(data.train_texts) == 1000 and len(data.val_texts) == 500
        assert set(data.train_labels) == set(range(len(data.labels)))
    # the label ids follow the published numbering when the integer column is used
    config = parse_config({"tasks": {"topic": {"train": str(SHARED_DATA / "ag_news_test.csv"),
                                               "max_train_examples": 200, "max_validation_examples": 50}}})
    numeric = load_tasks(config)["topic"]
    assert numeric.labels == ["0", "1", "2", "3"]
    assert len(numeric.train_texts) == 200 and len(numeric.val_texts) == 50


# ---- bad data: one line, naming the file -----------------------------------------------------

def test_missing_file(tmp_path):
    path = tmp_path / "nowhere.csv"
    assert error_of(task(path)) == f"{path}: file not found"


def test_missing_column_lists_the_columns(tmp_path):
    path = write_csv(tmp_path / "t.csv", ROWS, header=("sentence", "label"))
    message = error_of(task(path))
    assert message == f"{path}: no text column 'text'; columns are: sentence, label"
    message = error_of(task(path, text_column="sentence", label_column="category"))
    assert message == f"{path}: no label column 'category'; columns are: sentence, label"


def test_empty_file(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("")
    assert error_of(task(path)) == f"{path}: the file is empty"
    path.write_text("  \n\n")
    assert error_of(task(path)) == f"{path}: the file is empty"


@pytest.mark.parametrize("newline", ["\n", "\r\n", ""])
def test_header_only_file(tmp_path, newline):
    path = tmp_path / "header.csv"
    path.write_text("text,label" + newline)
    assert error_of(task(path)) == f"{path}: the file has a header but no rows"


def test_header_only_validation_file(tmp_path):
    train = write_csv(tmp_path / "t.csv", ROWS)
    val = tmp_path / "v.csv"
    val.write_text("text,label\n")
    assert error_of(task(train, val)) == f"{val}: the file has a header but no rows"


def test_empty_json_list(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text("[]")
    assert error_of(task(path)) == f"{path}: the file holds no rows"


def test_fewer_than_two_classes(tmp_path):
    path = write_csv(tmp_path / "t.csv", [(t, "sports") for t, _ in ROWS])
    message = error_of(task(path, path))
    assert message == f"{path}: only one class ('sports') in task 'topic'; a classifier needs two or more"


def test_no_text(tmp_path):
    path = write_csv(tmp_path / "t.csv", [("", lab) for _, lab in ROWS])
    assert error_of(task(path, path)) == f"{path}: the text column is empty in every row"


def test_numbers_as_text_are_refused(tmp_path):
    path = write_csv(tmp_path / "t.csv", [(i, lab) for i, (_, lab) in enumerate(ROWS)])
    assert "the text column holds only numbers" in error_of(task(path, path))


def test_blank_labels(tmp_path):
    path = write_csv(tmp_path / "t.csv", [ROWS[0], (ROWS[1][0], ""), *ROWS[2:]])
    assert error_of(task(path, path)) == (f"{path}: 1 row(s) have an empty label (first at data row 2); "
                                         "fill them in or remove them")


def test_validation_labels_unseen_in_training(tmp_path):
    train = write_csv(tmp_path / "t.csv", ROWS)
    val = write_csv(tmp_path / "v.csv", [("a cooking show", "food"), ("a rainy match", "sports"),
                                         ("pasta night", "food"), ("weather report", "weather")])
    assert error_of(task(train, val)) == f"{val}: validation labels never seen in training: food, weather"


def test_unsupported_type_binary_and_encoding(tmp_path):
    other = tmp_path / "data.xlsx"
    other.write_bytes(b"PK\x03\x04")
    assert error_of(task(other)).startswith(f"{other}: unsupported file type .xlsx")
    binary = tmp_path / "data.csv"
    binary.write_bytes(b"text,label\n\x00\x01\x02,a\n")
    assert error_of(task(binary)) == f"{binary}: this is not a text file (it holds binary data)"
    neither = tmp_path / "neither.csv"  # 0x81: not UTF-8, and undefined in Windows-1252
    neither.write_bytes(b"text,label\ncaf\x81,a\n")
    assert error_of(task(neither)).startswith(f"{neither}: the text is not UTF-8 (byte 0x81")


SPREADSHEET_ROWS = [("un café crème", "drink"), ("ça coûte 5 €", "price"), ("thé glacé", "drink"),
                    ("“cher” à 12 €", "price"), ("un café noir", "drink"), ("gratuit: 0 €", "price")]


def write_encoded_csv(path, rows, encoding: str) -> str:
    path.write_bytes(("text,label\n" + "".join(f"{t},{lab}\n" for t, lab in rows)).encode(encoding))
    return str(path)


def test_a_windows_1252_file_is_read_with_a_note_naming_the_encoding(tmp_path):
    path = write_encoded_csv(tmp_path / "excel.csv", SPREADSHEET_ROWS, "cp1252")
    data = load_task("topic", task(path, validation=path))
    assert sorted(data.train_texts) == sorted(t for t, _ in SPREADSHEET_ROWS)  # "café" and "€" as written
    assert data.notes == [f"{path}: not UTF-8, read as Windows-1252 (cp1252); if characters look wrong, save it as "
                          "UTF-8 or give the task's encoding"]


def test_a_utf8_file_is_read_as_before_without_a_note(tmp_path):
    path = write_encoded_csv(tmp_path / "utf8.csv", SPREADSHEET_ROWS, "utf-8")
    data = load_task("topic", task(path, validation=path))
    assert sorted(data.train_texts) == sorted(t for t, _ in SPREADSHEET_ROWS) and data.notes == []
    assert check_file(path).encoding == "utf-8"


def test_train_prints_the_encoding_note_and_keeps_it_in_the_summary(tmp_path, tiny_bert, capsys):
    import yaml

    from core.__main__ import main

    path = write_encoded_csv(tmp_path / "excel.csv", SPREADSHEET_ROWS * 3, "cp1252")
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump({"backbone": tiny_bert, "tasks": {"topic": {"train": path}},
                                      "training": {"epochs": 1, "batch_size": 8, "max_length": 16}}), encoding="utf-8")
    assert main(["train", "--config", str(config), "--runs-dir", str(tmp_path / "runs"), "--quiet"]) == 0
    note = f"{path}: not UTF-8, read as Windows-1252 (cp1252)"
    assert f"note: {note}" in capsys.readouterr().err
    (run,) = (tmp_path / "runs").iterdir()
    assert json.loads((run / "summary.json").read_text(encoding="utf-8"))["data_notes"][0].startswith(note)


def test_the_task_may_name_its_encoding(tmp_path):
    rows = [("naïve £ sign", "a"), ("déjà vu", "b"), ("crème brûlée", "a"), ("señor", "b")]
    latin = write_encoded_csv(tmp_path / "latin.csv", rows, "latin-1")
    data = load_task("topic", task(latin, validation=latin, encoding="latin-1"))
    assert sorted(data.train_texts) == sorted(t for t, _ in rows) and data.notes == []  # asked for: no note
    control = tmp_path / "control.csv"  # 0x81: Latin-1 reads it (a control character), Windows-1252 does not
    control.write_bytes(b"text,label\nab\x81c,a\nde,b\nfg,a\nhi,b\n")
    assert load_task("topic", task(control, validation=control, encoding="latin-1")).train_texts
    assert error_of(task(control)).startswith(f"{control}: the text is not UTF-8 (byte 0x81 at offset 13)")
    assert error_of(task(control, encoding="utf-8")) == (
        f"{control}: the text is not utf-8 (byte 0x81 at offset 13); save it as UTF-8 or give the task's encoding")


def test_an_unknown_encoding_is_a_one_line_config_error():
    from core.config import ConfigError

    for name in ("latin-9000", "rot13"):  # rot13 is a codec, but from text to text, not from bytes
        with pytest.raises(ConfigError) as caught:
            parse_config({"tasks": {"topic": {"train": "t.csv", "encoding": name}}})
        assert str(caught.value) == (f"invalid config: tasks.topic.encoding: unknown text encoding {name!r}; use "
                                     "auto, utf-8, cp1252, latin-1 or another Python codec name")


def test_malformed_json(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"text": "unterminated')
    assert error_of(task(path)).startswith(f"{path}: cannot read it as json: ")


def test_folder_instead_of_file(tmp_path):
    folder = tmp_path / "data.csv"
    folder.mkdir()
    assert error_of(task(folder)) == f"{folder}: is a folder, not a data file"


# ---- the checks, one function at a time -----------------------------------------------------

from core import data as data_module  # noqa: E402
from core.data import Table, cap, check_file, clean_texts, index_labels, label_names, split_table  # noqa: E402


def table(texts, labels=None, names=None) -> Table:
    return Table(list(texts), list(labels if labels is not None else range(len(texts))), names, "src.csv")


def data_error(call, *args) -> str:
    with pytest.raises(DataError) as caught:
        call(*args)
    return str(caught.value)


def test_every_check_file_message_exactly(tmp_path):
    unsupported = tmp_path / "data.xlsx"
    unsupported.write_text("x")
    assert data_error(check_file, str(unsupported)) == (
        f"{unsupported}: unsupported file type .xlsx; use .csv, .tsv, .tab, .json, .jsonl, .parquet")
    bare = tmp_path / "README"
    bare.write_text("x")
    assert data_error(check_file, str(bare)).startswith(f"{bare}: unsupported file type (none); use .csv")
    for bom in (b"\xff\xfe", b"\xfe\xff"):
        wide = tmp_path / "wide.csv"
        wide.write_bytes(bom + "text,label\n".encode("utf-16-le"))
        assert data_error(check_file, str(wide)) == f"{wide}: the text is UTF-16, not UTF-8; save it as UTF-8"
    neither = tmp_path / "neither.csv"
    neither.write_bytes(b"text,label\ncaf\x81,a\n")
    assert data_error(check_file, str(neither)) == (f"{neither}: the text is not UTF-8 (byte 0x81 at offset 14); "
                                                   "save it as UTF-8")
    one_byte = tmp_path / "one.csv"
    one_byte.write_text("x", encoding="utf-8")
    assert check_file(str(one_byte)).path == one_byte  # short, but not empty
    upper = tmp_path / "DATA.CSV"  # the suffix is matched in any case
    upper.write_text("text,label\na,b\n", encoding="utf-8")
    assert check_file(str(upper)).path == upper


def test_a_user_folder_path_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "t.csv").write_text("text,label\na,b\n", encoding="utf-8")
    assert check_file("~/t.csv").path == tmp_path / "t.csv"


def test_the_size_limit_is_in_mebibytes_and_inclusive(tmp_path, monkeypatch):
    monkeypatch.setattr(data_module, "MAX_FILE_MB", 1)
    path = tmp_path / "big.csv"
    path.write_bytes(b"text,label\n" + b"a" * (2**20 - 11))  # exactly 1 MiB: allowed
    assert check_file(str(path)).path == path
    path.write_bytes(b"text,label\n" + b"a" * (2**20 - 10 + 2**19))  # 1.5 MiB
    assert data_error(check_file, str(path)) == f"{path}: the file is 2 MB, over the 1 MB limit"


def test_binary_data_is_looked_for_in_the_first_64_kib(tmp_path):
    early = tmp_path / "early.csv"
    early.write_bytes(b"text,label\n" + b"a" * (65536 - 12) + b"\x00")  # the 65,536th byte
    assert data_error(check_file, str(early)) == f"{early}: this is not a text file (it holds binary data)"
    late = tmp_path / "late.csv"
    late.write_bytes(b"text,label\n" + b"a" * (65536 - 11) + b"\x00")  # the 65,537th
    assert check_file(str(late)).path == late  # NUL is valid UTF-8; only the start is sniffed


def test_parquet_is_not_read_as_text(tmp_path):
    path = tmp_path / "t.parquet"
    path.write_bytes(b"PAR1\x00\xff\xfe" + b"\x00" * 10)  # binary by nature
    assert check_file(str(path)).path == path


def test_rows_without_text_are_dropped_with_their_labels():
    cleaned = clean_texts(table(["a", None, float("nan"), "  ", "b", 7], ["x", "y", "z", "w", "v", "u"]))
    assert cleaned.texts == ["a", "b", "7"] and cleaned.labels == ["x", "v", "u"]
    assert cleaned.source == "src.csv"


@pytest.mark.parametrize("texts", [[1, 2.5, "3", "-4", "5.5"], ["1", "2"]])
def test_a_text_column_of_numbers_is_refused(texts):
    assert data_error(clean_texts, table(texts)) == (
        "src.csv: the text column holds only numbers; did you pick the wrong column?")


def test_blank_texts_everywhere_are_refused():
    assert data_error(clean_texts, table([None, " ", float("nan")])) == (
        "src.csv: the text column is empty in every row")


def test_label_order_numeric_for_numbers_else_text():
    assert label_names(table("abc", [10, 9, 1])) == [1, 9, 10]
    assert label_names(table("abc", [2.5, 1, 2])) == [1, 2, 2.5]
    assert label_names(table("abc", ["10", "9", "1"])) == ["1", "10", "9"]
    assert label_names(table("abc", [True, False, True])) == [False, True]  # booleans sort as text
    assert label_names(table("abcd", [2, "b", 1, "a"])) == [1, 2, "a", "b"]


def test_missing_labels_are_counted_and_the_first_is_named():
    message = data_error(label_names, table("abcd", ["x", "NaN", None, "y"]))
    assert message == "src.csv: 2 row(s) have an empty or NaN label (first at data row 2); fill them in or remove them"
    message = data_error(label_names, table("abc", ["x", "y", "  "]))
    assert message == "src.csv: 1 row(s) have an empty label (first at data row 3); fill them in or remove them"
    assert data_error(label_names, table("ab", [float("nan"), "x"])).startswith("src.csv: 1 row(s) have an empty label")


def test_too_many_distinct_labels_is_the_wrong_column(monkeypatch):
    monkeypatch.setattr(data_module, "MAX_LABELS", 3)
    assert label_names(table("abc", [1, 2, 3])) == [1, 2, 3]  # at the limit: fine
    assert data_error(label_names, table("abcd", [1, 2, 3, 4])) == (
        "src.csv: 4 distinct labels (over 3); did you pick the text column as the label column?")
    train, val = table("abc", ["a", "b", "c"]), table("abc", ["a", "b", "d"])
    val.source = "val.csv"
    assert data_error(index_labels, "t", train, val) == (
        "src.csv: 4 distinct labels (over 3); did you pick the text column as the label column?")
    assert index_labels("t", train, table("a", ["a"])).labels == ["a", "b", "c"]  # 3 together: at the limit


def test_labels_are_indexed_by_name_across_splits():
    names = ["neg", "pos"]  # a hub ClassLabel: integers stand for these names
    train = table(["a", "b", "c"], [1, 0, 1], names)
    val = table(["d", "e"], ["pos", " neg "], None)  # validation as plain text, with stray spaces
    data = index_labels("s", train, val)
    assert data.labels == ["neg", "pos"] and data.train_labels == [1, 0, 1] and data.val_labels == [1, 0]
    assert data.name == "s" and data.source == "src.csv" and data.val_texts == ["d", "e"]
    floats = index_labels("f", table("abc", [1.0, 2.0, 1.0]), table("ab", [2, " 1 "]))
    assert floats.labels == ["1", "2"] and floats.val_labels == [1, 0]
    out_of_range = index_labels("o", table("abcd", [5, 0, 2, 5], names), table("a", [0], names))
    assert out_of_range.labels == ["neg", "2", "5"]  # integers past the names stay numbers


def test_only_one_class_names_it_by_its_label_name():
    assert data_error(index_labels, "t", table("ab", [1, 1], ["neg", "pos"]), table("a", [1])) == (
        "src.csv: only one class ('pos') in task 't'; a classifier needs two or more")


def test_unseen_validation_labels_list_at_most_ten():
    train = table("ab", ["a", "b"])
    val = table("x" * 12, [f"z{i:02d}" for i in range(12)])
    message = data_error(index_labels, "t", train, val)
    assert message == "src.csv: validation labels never seen in training: " + ", ".join(f"z{i:02d}" for i in range(10))


def test_a_split_without_validation_file_is_seeded_and_partitions_the_rows():
    rows = table([f"t{i}" for i in range(10)], [f"l{i}" for i in range(10)], ["n"])
    train, val = split_table(rows, 0.2, seed=0)
    assert len(train.texts) == 8 and len(val.texts) == 2
    assert sorted(train.texts + val.texts) == sorted(rows.texts)
    assert all(t[1:] == label[1:] for t, label in zip(train.texts + val.texts, train.labels + val.labels))
    assert train.label_names == val.label_names == ["n"] and train.source == val.source == "src.csv"
    assert (train.texts, val.texts) == tuple(x.texts for x in split_table(rows, 0.2, seed=0))
    assert val.texts == ["t7", "t8"]  # the same rows as every earlier version: old configs reproduce
    assert split_table(rows, 0.2, seed=1)[1].texts != val.texts
    assert [len(x.texts) for x in split_table(rows, 0.25, 0)] == [8, 2]  # round(2.5) = 2
    assert [len(x.texts) for x in split_table(rows, 0.01, 0)] == [9, 1]  # at least one validation row


def test_too_few_rows_to_split():
    assert [len(x.texts) for x in split_table(table("abc"), 0.2, 0)] == [2, 1]
    assert data_error(split_table, table("ab"), 0.2, 0) == (
        "src.csv: only 2 rows, too few to split off validation data")
    assert data_error(split_table, table("abcd"), 0.7, 0) == (
        "src.csv: only 4 rows, too few to split off validation data")


def test_a_cap_keeps_seeded_rows_in_file_order():
    rows = table([f"t{i}" for i in range(10)], list(range(10)), ["n"])
    assert cap(rows, None, 0) is rows and cap(rows, 10, 0) is rows
    capped = cap(rows, 4, 0)
    assert capped.texts == ["t0", "t1", "t2", "t4"]  # the same rows as every earlier version
    assert capped.labels == [0, 1, 2, 4] and capped.label_names == ["n"] and capped.source == "src.csv"
    assert cap(rows, 4, 1).texts != capped.texts
    assert cap(rows, 4, 3).texts == ["t1", "t3", "t4", "t5"]  # seed 0 alone cannot pin the offset: Random(-1) == Random(1)
    assert len(cap(rows, 9, 0).texts) == 9
