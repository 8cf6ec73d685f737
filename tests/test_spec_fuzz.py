"""Property-based fuzzing of spec loading (issue 13): mutate the shipped specs line by line
and byte by byte, and check every outcome is a valid spec or a `UserError` (exit 2) whose text
starts with `file:line:`; never another exception, never a traceback.

Seeded (`derandomize`), so a run is reproducible; a failure prints the minimal mutation list.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dialinsight_engine.errors import UserError
from dialinsight_engine.plugins import build_registry
from dialinsight_engine.spec import load_spec

from conftest import REPO, dialengine

SPECS = {p.name: p.read_bytes() for p in sorted((REPO / "specs").glob("*.toml"))}

#: values a hostile but fair user might type; each replaces the value of a `key = value` line
ODD_VALUES = [
    "inf", "-inf", "nan", "+nan", "-1", "0", "-0.0", "1e308", str(10**30), str(-(2**63)), "true", "false",
    '""', '"x"', '"../.."', '"."', '"/"', '"a/b"', '"@examples/../../../etc/passwd"', '"\\u0000"', "[]", "{}",
    "[1, 'a']", '["../x"]', "{ a = 1 }", "1979-05-27T07:32:00Z", "07:32:00", '"{{ cycler.__init__.__globals__ }}"',
    '"{% for %}"', '"{{ nope }}"', "[" * 70 + "]" * 70, "{a=" * 70 + "1" + "}" * 70, "[" * 400 + "]" * 400,
    '{ type = "strnig" }', "{ enum = [] }", '"""\nmulti\nline"""',
]
#: lines inserted anywhere
ODD_LINES = [
    "foo.bar = 1", "[t.t.t]", "[[tasks]]", "[project]", 'source = "x"', 'base_dir = "/"', "[backends.x]",
    'plugin = "nope"', "[[evolution.operators]]", 'name = "template"', 'template = "{{ lipsum.__globals__ }}"',
    "[labels]", 'backend = "defualt"', "[quality.metrics.x]", "weight = nan", "a." * 80 + "a = 1", "= 1",
    "[", "]]", '"""', "'''", "x = '''", "\\", "# comment [backends.y]",
]

KEY_LINE = re.compile(rb"^(\s*[A-Za-z0-9_.\"'-]+\s*=\s*)(.*)$")


def mutation() -> st.SearchStrategy:
    return st.one_of(
        st.tuples(st.just("delete"), st.integers(0, 10**6)),
        st.tuples(st.just("duplicate"), st.integers(0, 10**6)),
        st.tuples(st.just("swap"), st.integers(0, 10**6), st.integers(0, 10**6)),
        st.tuples(st.just("value"), st.integers(0, 10**6), st.sampled_from(ODD_VALUES)),
        st.tuples(st.just("insert"), st.integers(0, 10**6), st.sampled_from(ODD_LINES)),
        st.tuples(st.just("byte"), st.integers(0, 10**6), st.integers(0, 255)),
        st.tuples(st.just("truncate"), st.integers(0, 10**6)),
    )


def mutate(text: bytes, ops: list[tuple]) -> bytes:
    """Apply the mutations in order (positions taken modulo the current size)."""
    for op in ops:
        lines = text.split(b"\n")
        kind, at = op[0], op[1] % max(len(lines), 1)
        if kind == "delete":
            del lines[at]
        elif kind == "duplicate":
            lines.insert(at, lines[at])
        elif kind == "swap":
            other = op[2] % len(lines)
            lines[at], lines[other] = lines[other], lines[at]
        elif kind == "value":
            keyed = [i for i, line in enumerate(lines) if KEY_LINE.match(line)]
            if keyed:
                i = keyed[op[1] % len(keyed)]
                lines[i] = KEY_LINE.match(lines[i]).group(1) + op[2].encode()
        elif kind == "insert":
            lines.insert(at, op[2].encode())
        if kind in ("byte", "truncate"):
            pos = op[1] % max(len(text), 1)
            text = text[:pos] + bytes([op[2]]) + text[pos + 1:] if kind == "byte" else text[:pos]
        else:
            text = b"\n".join(lines)
    return text


@pytest.fixture(scope="module")
def registry():
    return build_registry()


def check_outcome(path: Path, registry) -> str:
    """'ok' or 'user-error'; anything else fails the test with the input that caused it."""
    try:
        spec = load_spec(path, registry)
    except UserError as exc:
        text = exc.render()
        assert re.match(rf"{re.escape(str(path))}:\d+: ", text), f"no file:line in {text!r}"
        for line in text.splitlines():  # each problem has its location once
            assert line.count(f"{path}:") <= 1, f"location printed twice: {text!r}"
        return "user-error"
    # what the runner does with a loaded spec: fingerprints and the run folder
    json.dumps(spec.model_dump(mode="json"))
    assert spec.run_dir().parent == spec.runs_root()
    return "ok"


@settings(max_examples=250, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(sorted(SPECS)), ops=st.lists(mutation(), min_size=1, max_size=3))
def test_mutated_specs_load_or_fail_with_file_and_line(tmp_path_factory, registry, name, ops):
    folder = tmp_path_factory.mktemp("fuzz")
    path = folder / name
    path.write_bytes(mutate(SPECS[name], ops))
    check_outcome(path, registry)


def test_the_mutations_reach_both_outcomes(tmp_path, registry):
    """The fuzzer is not vacuous: unmutated specs load, and a seeded sample of mutations gives
    both outcomes (with the shipped specs, most mutations are errors)."""
    rng = random.Random(13)
    outcomes = {"ok": 0, "user-error": 0}
    for n in range(60):
        name = sorted(SPECS)[n % len(SPECS)]
        path = tmp_path / f"{n}-{name}"
        ops = [("value", rng.randrange(10**6), rng.choice(ODD_VALUES))] if n % 2 else \
            [("delete", rng.randrange(10**6))]
        path.write_bytes(mutate(SPECS[name], ops))
        outcomes[check_outcome(path, registry)] += 1
    assert outcomes["ok"] >= 5 and outcomes["user-error"] >= 20, outcomes
    for name, text in SPECS.items():
        path = tmp_path / name
        path.write_bytes(text)
        assert check_outcome(path, registry) == "ok"


def test_mutated_specs_through_the_real_cli(tmp_path):
    """A few through `dialengine validate` as a user runs it: exit 0 or 2 with file:line, and
    never a traceback."""
    rng = random.Random(2026)
    codes = []
    for n in range(4):  # each CLI start costs seconds; the in-process runs above do the volume
        name = sorted(SPECS)[n % len(SPECS)]
        path = tmp_path / f"cli{n}-{name}"
        ops = [(rng.choice(["value", "insert", "byte", "truncate"]), rng.randrange(10**6),
                rng.choice(ODD_VALUES) if n % 2 else rng.choice(ODD_LINES))]
        if ops[0][0] == "byte":
            ops = [("byte", ops[0][1], rng.randrange(256))]
        path.write_bytes(mutate(SPECS[name], ops))
        result = dialengine("validate", str(path), plugins=None, timeout=120)
        codes.append(result.returncode)
        assert result.returncode in (0, 2), (ops, result.stderr)
        assert "Traceback" not in result.stderr, (ops, result.stderr)
        if result.returncode == 2:
            assert re.search(rf"error: {re.escape(str(path))}:\d+: ", result.stderr), (ops, result.stderr)
    assert 2 in codes


def _random_ops(rng: random.Random) -> list[tuple]:
    ops = []
    for _ in range(rng.randint(1, 3)):
        kind = rng.choice(["delete", "duplicate", "swap", "value", "insert", "byte", "truncate"])
        at = rng.randrange(10**6)
        extra = {"swap": (rng.randrange(10**6),), "value": (rng.choice(ODD_VALUES),),
                 "insert": (rng.choice(ODD_LINES),), "byte": (rng.randrange(256),)}.get(kind, ())
        ops.append((kind, at, *extra))
    return ops


def main() -> None:
    """`python tests/test_spec_fuzz.py [N] [CLI]`: N seeded mutations in-process and CLI of them
    through `dialengine validate`; prints the outcome counts (the figures in docs/reliability.md)."""
    import collections
    import sys
    import tempfile

    n, cli = (int(a) for a in (sys.argv[1:] + ["600", "40"])[:2])
    rng, registry, folder = random.Random(13), build_registry(), Path(tempfile.mkdtemp(prefix="spec-fuzz-"))
    outcomes: collections.Counter[str] = collections.Counter()
    for i in range(n):
        name = rng.choice(sorted(SPECS))
        path = folder / f"{i}-{name}"
        path.write_bytes(mutate(SPECS[name], _random_ops(rng)))
        try:
            outcomes[check_outcome(path, registry)] += 1
        except Exception as exc:  # noqa: BLE001 - counted, with the input kept for a look
            outcomes["crash"] += 1
            print(f"CRASH {path}: {type(exc).__name__}: {exc}")
        if i < cli:
            result = dialengine("validate", str(path), plugins=None, timeout=120)
            ok = result.returncode in (0, 2) and "Traceback" not in result.stderr and (
                result.returncode == 0 or re.search(rf"error: {re.escape(str(path))}:\d+: ", result.stderr))
            outcomes[f"cli exit {result.returncode}" + ("" if ok else " BAD")] += 1
    print(dict(outcomes))


if __name__ == "__main__":
    main()
