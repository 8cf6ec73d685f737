"""Data fuzzing: JSONL dialogue files built from the data format, then damaged (bad bytes,
other encodings, a BOM, truncation, deep nesting, wrong types, surrogate escapes, NaN, huge
numbers, CRLF, gzip corruption), through the real `ingest` stage in both `on_error` modes.

Every outcome must be one of: the run succeeds and every broken record is a counted skip
naming file:line; or a `DataError` (exit 2) naming the data file (and its line, for a broken
record). Anything else (a traceback, exit 1) fails. Seeded (derandomized) so a run is
repeatable; the minimised crashes of issue 13 are explicit tests in test_readers.py.
"""

from __future__ import annotations

import gzip
import json
import re

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from dialinsight_engine.errors import DataError
from dialinsight_engine.plugins import build_registry
from dialinsight_engine.readers.base import UnreadableFile
from dialinsight_engine.run import Runner
from dialinsight_engine.spec import load_spec

from conftest import CORE_SPEC, EXAMPLES

REAL_LINES = (EXAMPLES / "realestate_dialogues.jsonl").read_bytes().splitlines()
ROLES = ["customer", "agent", "user", "system", "USER", "Customer", " agent ", "", "narrator"]
FIELDS = ["id", "turns", "messages", "truth", "intents", "role", "text", "content", "speaker"]

# -- records built from the data format --------------------------------------------------------
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=False),
                      st.text(max_size=20))
json_value = st.recursive(json_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)), max_leaves=8)
turn = st.fixed_dictionaries({"role": st.sampled_from(ROLES), "text": st.text(max_size=60)})
record = st.fixed_dictionaries(
    {"turns": st.lists(turn, min_size=0, max_size=5)},
    optional={"id": st.one_of(st.text(max_size=12), st.integers()), "truth": json_value,
              "intents": st.lists(st.text(max_size=10), max_size=3), "services": json_value},
)


@st.composite
def clean_line(draw: st.DrawFn) -> bytes:
    """A well-formed line: one of the shipped dialogues, or a generated record."""
    if draw(st.integers(0, 2)) > 0:  # mostly real dialogues, so many files have records to keep
        return draw(st.sampled_from(REAL_LINES))
    return json.dumps(draw(record), ensure_ascii=draw(st.booleans())).encode("utf-8")


# -- damage ------------------------------------------------------------------------------------
@st.composite
def damaged_line(draw: st.DrawFn) -> bytes:
    line = draw(clean_line())
    kind = draw(st.sampled_from([
        "none", "none", "bad_byte", "latin1", "cp1252", "utf16", "truncate", "deep", "wrong_type",
        "surrogate", "nan", "huge_int", "nul", "crlf", "not_object",
    ]))
    pos = draw(st.integers(0, max(len(line) - 1, 0)))
    event(f"line damage: {kind}")
    if kind == "bad_byte":
        return line[:pos] + bytes([draw(st.integers(0x80, 0xFF))]) + line[pos:]
    if kind in ("latin1", "cp1252", "utf16"):
        text = line.decode("utf-8").replace("Hello", "Olá €")
        return text.encode({"latin1": "latin-1", "cp1252": "cp1252", "utf16": "utf-16"}[kind], errors="replace")
    if kind == "truncate":
        return line[:pos]
    if kind == "deep":
        depth = draw(st.sampled_from([50, 101, 500, 5000, 200_000]))
        opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a": ', b"}")]))
        return b'{"id": "deep", "turns": [], "x": ' + opener * depth + b"1" + closer * depth + b"}"
    if kind == "wrong_type":
        field = draw(st.sampled_from(FIELDS)).encode()
        value = json.dumps(draw(json_value)).encode()
        swapped = b'"' + field + b'": ' + value + b', "_was": '
        return re.sub(rb'"' + re.escape(field) + rb'": ', lambda _: swapped, line, count=1)
    if kind == "surrogate":
        escape = draw(st.sampled_from([b"\\ud800", b"\\udfff", b"\\uDBFF", b"\\ud83d\\ude00"]))
        return line.replace(b'"text": "', b'"text": "' + escape, 1)
    if kind == "nan":
        return line.replace(b'"id": ', b'"score": NaN, "inf": -Infinity, "id": ', 1)
    if kind == "huge_int":
        return line.replace(b'"id": ', b'"n": ' + b"7" * draw(st.sampled_from([20, 4301, 10_000])) + b', "id": ', 1)
    if kind == "nul":
        return line[:pos] + b"\x00" + line[pos:]
    if kind == "crlf":
        return line + b"\r"
    if kind == "not_object":
        return json.dumps(draw(json_value)).encode()
    return line


@st.composite
def data_file(draw: st.DrawFn) -> tuple[str, bytes]:
    """(file name, content): JSON Lines, maybe with a BOM, blank lines, gzip and its damage."""
    lines = draw(st.lists(damaged_line(), min_size=0, max_size=6))
    if draw(st.integers(0, 4)) == 0:
        lines.insert(draw(st.integers(0, len(lines))), b"   ")
    content = b"\n".join(lines) + (b"\n" if draw(st.booleans()) else b"")
    if draw(st.integers(0, 3)) == 0:
        content = b"\xef\xbb\xbf" + content
    if draw(st.integers(0, 3)) > 0:
        return "d.jsonl", content
    packed = gzip.compress(content, mtime=0)
    damage = draw(st.sampled_from(["none", "truncate", "flip", "garbage", "not_gzip"]))
    event(f"gzip damage: {damage}")
    cut = draw(st.integers(1, max(len(packed) - 1, 1)))
    if damage == "truncate":
        packed = packed[:cut]
    elif damage == "flip":
        packed = packed[:cut] + bytes([packed[cut] ^ 0x5A]) + packed[cut + 1:] if cut < len(packed) else packed
    elif damage == "garbage":
        packed += b"\x00garbage"
    elif damage == "not_gzip":
        packed = content
    return "d.jsonl.gz", packed


# -- the property --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ingest_runs(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """ingest_runs(name, content, on_error) -> (stats, None) | (None, DataError): the real stage."""
    base = tmp_path_factory.mktemp("fuzz")
    registry = build_registry()

    def run(name: str, content: bytes, on_error: str):  # type: ignore[no-untyped-def]
        data = base / name
        for old in base.glob("d.jsonl*"):
            old.unlink()
        data.write_bytes(content)
        spec_path = base / f"{on_error}.toml"
        spec_path.write_text(CORE_SPEC.format(name=f"fuzz-{on_error}", runs=(base / "runs").as_posix(),
                                              data=data.as_posix(), on_error=on_error), encoding="utf-8")
        runner = Runner(load_spec(spec_path, registry), registry, quiet=True)
        try:
            runner.apply(until="ingest")
        except DataError as exc:
            return data, None, exc
        manifest = json.loads((runner.run_dir / "ingest" / "manifest.json").read_text(encoding="utf-8"))
        return data, manifest, None

    return run


LINE_REF = re.compile(r"^(?P<file>.+?):(?P<line>\d+): ")


@settings(max_examples=300, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(case=data_file())
def test_every_damaged_file_is_a_counted_skip_or_an_exit_2_naming_it(ingest_runs, case) -> None:  # type: ignore[no-untyped-def]
    name, content = case
    data, manifest, error = ingest_runs(name, content, "skip")
    event("skip mode: " + (type(error).__name__ if error else "ok, skips counted" if
                           manifest["stats"]["skipped_broken"] else "ok, nothing broken"))
    if error is not None:  # exit 2 naming the data file: unreadable, or nothing left to process
        assert error.file == str(data), error.render()
        assert isinstance(error, UnreadableFile) or "no dialogues" in error.message or \
            "holds no records" in error.message, error.render()
        skipped_lines: list[int] = []
    else:
        stats = manifest["stats"]
        assert stats["dialogues"] == manifest["rows_out"] > 0
        assert stats["skipped_broken"] == len(stats["skipped_examples"]) or stats["skipped_broken"] > 20
        skipped_lines = []
        for example in stats["skipped_examples"]:
            where = LINE_REF.match(example)
            assert where and where["file"] == str(data), example
            skipped_lines.append(int(where["line"]))
        if not name.endswith(".gz"):  # every non-blank line is kept, skipped broken, or too short
            body = content.removeprefix(b"\xef\xbb\xbf")
            non_blank = sum(1 for line in body.split(b"\n") if _not_blank(line))
            assert stats["dialogues"] + stats["skipped_broken"] + stats["skipped_too_short"] == non_blank

    # "fail" stops at the first broken record the "skip" run counted, naming the same line
    data, manifest, error = ingest_runs(name, content, "fail")
    if skipped_lines:
        assert error is not None and error.file == str(data) and error.line == skipped_lines[0], error
    elif error is not None:
        assert error.file == str(data), error.render()


def _not_blank(line: bytes) -> bool:
    try:
        return bool(line.decode("utf-8").strip())
    except UnicodeDecodeError:
        return True
