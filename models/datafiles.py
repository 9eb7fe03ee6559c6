"""Data a user has, read into rows named as sumsweep names them (fname, dialogue, summary, summary2...).

A source is a CSV, TSV, JSON Lines / JSON or Parquet file, a folder written by `datasets`' save_to_disk, or
`hub:NAME[:CONFIG]:SPLIT`, a dataset on the Hugging Face hub (NAME may also be a local folder laid out as a
hub dataset is). CSV and TSV are read here, the rest through Hugging Face `datasets`. `fname` or `id` names a
row; a column mapping (`--columns dialogue=text,summary=highlights,fname=doc_id`, config key `data.columns`)
names the rest.
"""
from __future__ import annotations

import csv
import io
import json
import re
import tempfile
from pathlib import Path
from typing import Any

from models.errors import ConfigError, DataError
from models.hub import hub_reachable, offline

HUB = "hub:"
IDENTIFIERS = ("fname", "id")  # the first the data has names its rows
FORMATS = {".csv": "CSV", ".tsv": "TSV", ".jsonl": "JSON Lines", ".json": "JSON", ".parquet": "Parquet"}
_BUILDERS = {"CSV": "csv", "TSV": "csv", "JSON Lines": "json", "JSON": "json", "Parquet": "parquet"}
# What a file of each format needs, {columns} being the columns the reader needs of it.
_LAYOUT = {"CSV": "a header row {columns} and data rows",
           "TSV": "a header row of {columns}, tab-separated, and data rows",
           "JSON Lines": "one JSON object a line, with {columns}",
           "JSON": "a list of JSON objects with {columns}",
           "Parquet": "a table with columns {columns}"}
_TRAINING_COLUMNS = ("fname", "dialogue", "summary")


def _layout(kind: str, need: tuple[str, ...] = _TRAINING_COLUMNS) -> str:
    return _LAYOUT[kind].format(columns=",".join(need) if kind == "CSV" else ", ".join(need))
_OURS = re.compile(r"fname|dialogue|summary(?:[2-9]|[1-9][0-9]+)?")
_HUB_SOURCE = re.compile(r"hub:([^:]+)(?::([^:\[]+))?:([^:\[]+(?:\[[^\]]*\])?)")  # SPLIT may be a slice: train[:100]
_FLAG = "--columns"
LONGEST_FIELD = 2**31 - 1  # the most csv takes on every platform (a C long)


def parse_columns(text: str, source: str = _FLAG) -> dict[str, str]:
    """`dialogue=text,summary=highlights,fname=doc_id` as {our name: the data's column}."""
    mapping: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        ours, sep, theirs = (s.strip() for s in pair.partition("="))
        if not (sep and ours and theirs):
            raise ConfigError(f"{source} '{text}': '{pair}' is not NAME=COLUMN; write it as "
                              f"{_FLAG} dialogue=text,summary=highlights")
        if not _OURS.fullmatch(ours):
            example = f"{theirs}={ours}" if _OURS.fullmatch(theirs) else f"dialogue={ours}"  # likely swapped
            raise ConfigError(f"{source} '{text}': '{ours}' is not a column sumsweep reads; map fname, dialogue, "
                              f"summary (or summary2...) to your columns, e.g. {_FLAG} {example}")
        if ours in mapping:
            raise ConfigError(f"{source} '{text}': {ours} is mapped twice; keep one {ours}=COLUMN")
        mapping[ours] = theirs
    return mapping


def is_hub(source: str | Path) -> bool:
    return str(source).startswith(HUB)


def read_table(source: str | Path, need: tuple[str, ...], columns: str = "") -> list[dict[str, str]]:
    """Every row of `source`, keyed by our names: fname, dialogue, and summary, summary2... where the data has
    them. A column in `need` that the data lacks is an error listing the columns it has. `columns`: the
    mapping, as parse_columns reads it."""
    mapping = parse_columns(columns)
    dataset = _open(str(source), need)
    found = dataset.column_names
    names = _our_names(found, mapping)
    missing = [n for n in need if n not in names]
    if missing:
        raise DataError(_missing(str(source), missing, found, mapping))
    data = dataset.select_columns(list(dict.fromkeys(names.values()))).to_dict()
    texts = {ours: [_text(v, str(source), theirs) for v in data[theirs]] for ours, theirs in names.items()}
    return [dict(zip(texts, values)) for values in zip(*texts.values())] if texts else []


def read_rows(source: str | Path, need_summary: bool, columns: str = "") -> tuple[list[dict[str, str]], int]:
    """The usable rows (a dialogue, and a summary where one is needed) and how many were skipped."""
    rows = read_table(source, ("fname", "dialogue", "summary") if need_summary else ("fname", "dialogue"), columns)
    usable = [r for r in rows if r["dialogue"].strip() and (not need_summary or r["summary"].strip())]
    if not usable:
        raise DataError(f"{source} has no row with a non-empty dialogue{' and summary' if need_summary else ''}; "
                        "fill those columns")
    return usable, len(rows) - len(usable)


def _our_names(found: list[str], mapping: dict[str, str]) -> dict[str, str]:
    """{our name: the data's column} for every column we read that the data has."""
    names = {ours: theirs for ours, theirs in mapping.items() if theirs in found}
    if "fname" not in mapping:
        identifier = next((c for c in IDENTIFIERS if c in found), None)
        if identifier:
            names["fname"] = identifier
    for column in found:
        if _OURS.fullmatch(column) and column not in mapping and column != "fname":
            names.setdefault(column, column)
    return names


def _missing(source: str, missing: list[str], found: list[str], mapping: dict[str, str]) -> str:
    columns = ", ".join(found) or "none"
    mapped = [ours for ours in missing if ours in mapping]
    if mapped:
        pairs = ",".join(f"{ours}={mapping[ours]}" for ours in mapped)
        return (f"{source} has no column {', '.join(repr(mapping[o]) for o in mapped)} ({_FLAG} {pairs}); "
                f"its columns are {columns}; map {', '.join(mapped)} to one of them with {_FLAG}")
    wanted = ", ".join("'fname' or 'id'" if ours == "fname" else repr(ours) for ours in missing)
    return (f"{source} has no column {wanted}; its columns are {columns}; map yours with "
            f"{_FLAG} {','.join(f'{ours}=COLUMN' for ours in missing)} (config key data.columns)")


def _text(value: Any, source: str, column: str) -> str:
    if value is None:
        return ""
    if isinstance(value, (str, int, float)):
        return str(value)
    raise DataError(f"{source}: column {column} holds {type(value).__name__} values, not text; "
                    f"map a text column with {_FLAG}")


# -- opening a source through `datasets` ----------------------------------------------------------


def _open(source: str, need: tuple[str, ...] = _TRAINING_COLUMNS):
    """The source as one `datasets.Dataset`; a CSV or TSV file as its `Columns`."""
    if is_hub(source):
        return _hub(source)
    path = Path(source)
    if path.is_dir():
        return _saved(path)
    if not path.is_file():
        raise DataError(f"data file {path} does not exist; check the path")
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"{path} is not a file sumsweep reads; save it as {', '.join(FORMATS)} "
                        "(the suffix names the format), or as a folder with save_to_disk")
    if kind == "Parquet":
        if path.stat().st_size == 0:
            raise DataError(f"{path} is empty; it needs {_layout(kind, need)}")
        return _load(path, kind, need)
    text = _utf8(path)
    if not text.strip():
        raise DataError(f"{path} is empty; it needs {_layout(kind, need)}")
    return _csv(path, text, kind) if kind in ("CSV", "TSV") else _load(path, kind, need)


def _utf8(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")  # Excel's "CSV UTF-8" starts with a byte-order mark
    except UnicodeDecodeError as err:
        raise DataError(f"{path} is not UTF-8 text (byte {err.start}); save it as UTF-8") from None


def _csv(path: Path, text: str, kind: str) -> "Columns":
    """Every column read as text, as written (pandas would make fname 007 the number 7 and a summary "NA" a
    missing value), by Python's csv module: through `datasets` the first file took 0.8 s at every start."""
    sep = "\t" if kind == "TSV" else ","
    csv.field_size_limit(LONGEST_FIELD)  # a dialogue may pass csv's default limit (131,072 characters)
    # strict: an unclosed quote is an error, not the rest of the file read into one field
    records = csv.reader(io.StringIO(text, newline=""), delimiter=sep, strict=True)
    try:
        header, rows = next(records), []
        for row in records:
            if len(row) > len(header):
                raise csv.Error(f"line {records.line_num} has {len(row)} fields, the header {len(header)}")
            if row:  # a blank line
                rows.append(row + [""] * (len(header) - len(row)))
    except csv.Error as err:
        raise DataError(f"{path} is not a readable {kind} file ({err}); check its quoting") from None
    twice = sorted({name for name in header if header.count(name) > 1})
    if twice:
        raise DataError(f"{path} names the column {', '.join(map(repr, twice))} twice in its header; rename one")
    return Columns({name: [row[i] for row in rows] for i, name in enumerate(header)})


class Columns(dict):
    """A file's columns of text by name, read here: what `read_table` asks of a `datasets.Dataset`."""

    @property
    def column_names(self) -> list[str]:
        return list(self)

    def select_columns(self, names: list[str]) -> "Columns":
        return Columns({name: self[name] for name in names})

    def to_dict(self) -> dict[str, list[str]]:
        return dict(self)


def _load(path: Path, kind: str, need: tuple[str, ...] = _TRAINING_COLUMNS, **options):
    import datasets
    from datasets.exceptions import DatasetGenerationError

    try:
        return _read_local(datasets.load_dataset, _BUILDERS[kind], data_files=str(path), split="train", **options)
    except (DatasetGenerationError, ValueError, TypeError) as err:
        fix = "check its quoting" if kind in ("CSV", "TSV") else f"it needs {_layout(kind, need)}"
        raise DataError(f"{path} is not a readable {kind} file ({_reason(err)}); {fix}") from None


def _read_local(load, *args, **kwargs):
    """`load` (datasets.load_dataset) on local data, into memory, through a throw-away Arrow cache: `datasets`
    would key a kept one by the files' modification times, and a file rewritten within its clock's resolution
    would read as before. Tokenized rows have a cache of their own (models/data.py)."""
    _quiet()
    with tempfile.TemporaryDirectory(prefix="sumsweep-read-") as cache:
        return load(*args, cache_dir=cache, keep_in_memory=True, **kwargs)


def _saved(path: Path):
    if (path / "dataset_dict.json").is_file():
        splits = json.loads((path / "dataset_dict.json").read_text(encoding="utf-8")).get("splits", [])
        raise DataError(f"{path} holds the splits {', '.join(splits)} (written by save_to_disk); "
                        f"give the folder of one, e.g. {path / (splits or ['train'])[0]}")
    if not (path / "state.json").is_file():
        raise DataError(f"data path {path} is a directory, not a data file; give a file in it "
                        f"({', '.join(FORMATS)}) or a folder written by save_to_disk")
    import datasets

    _quiet()
    try:
        return datasets.load_from_disk(str(path), keep_in_memory=True)
    except (FileNotFoundError, ValueError) as err:
        raise DataError(f"{path} cannot be read as a saved dataset ({_reason(err)}); "
                        "write it again with save_to_disk") from None


def _hub(source: str):
    match = _HUB_SOURCE.fullmatch(source)
    if not match:
        raise DataError(f"{source} is not hub:NAME[:CONFIG]:SPLIT; write it as e.g. hub:knkarthick/dialogsum:train")
    name, config, split = match.groups()
    local = Path(name).is_dir()  # a folder laid out as a hub dataset is: read the same way, without the hub
    if not local and not offline() and not hub_reachable():  # datasets would retry for 20 s
        raise DataError(f"{source} cannot be read: the Hugging Face hub cannot be reached from this machine; "
                        "save the dataset with save_to_disk where the hub is reachable and pass that folder, "
                        "or set HF_HUB_OFFLINE=1 to read a copy in the local cache")
    import datasets

    _quiet()
    try:
        if local:
            return _read_local(datasets.load_dataset, name, config, split=split)
        return datasets.load_dataset(name, config, split=split)
    except ConnectionError as err:
        why = ("the hub is not used (HF_HUB_OFFLINE) and the dataset is not in the local cache" if offline()
               else f"the hub did not answer ({_reason(err)})")
        raise DataError(f"{source} cannot be read: {why}; save it with save_to_disk where the hub is reachable "
                        "and pass that folder") from None
    except (FileNotFoundError, ValueError) as err:  # no such dataset, config or split
        raise DataError(f"{source} cannot be loaded ({_reason(err)}); check NAME, CONFIG and SPLIT") from None


def _quiet() -> None:
    import datasets

    datasets.disable_progress_bars()  # "Generating train split" bars would bury the training progress
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # what goes wrong, sumsweep says in one line


def _reason(err: BaseException) -> str:
    """The first line of the innermost error: what pandas or pyarrow said, not the wrapper around it."""
    while err.__cause__ is not None or err.__context__ is not None:
        err = err.__cause__ or err.__context__
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
