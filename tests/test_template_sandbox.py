"""A spec is data: its templates render in a sandbox, and `validate` rejects unsafe ones.

The payload below runs a shell command in a plain `jinja2.Environment`; here it must never run,
neither at `validate`, nor at `apply --until seeds`, nor when an evolution operator renders it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dialinsight_engine.errors import UserError
from dialinsight_engine.operators.base import InstructionView
from dialinsight_engine.operators.evol import Template, TemplateConfig
from dialinsight_engine.plugins import build_registry
from dialinsight_engine.run import Runner
from dialinsight_engine.spec import load_spec
from dialinsight_engine.templating import (
    TemplateProblem,
    check_template,
    compile_template,
    render_template,
)

from conftest import dialengine


def payload(marker: Path) -> str:
    return "{{ cycler.__init__.__globals__.os.popen('touch " + marker.as_posix() + "').read() }}"


@pytest.mark.parametrize("text", [
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ cycler['__init__'] }}",
    "{{ (cycler|attr('__init__')) }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{% for x in roles %}{{ x._private }}{% endfor %}",
    "{{ lipsum.__globals__ }}",
    "{{ joiner.__call__.__func__.func_globals }}",
])
def test_static_check_refuses_internal_attributes(text: str) -> None:
    with pytest.raises(TemplateProblem, match="may not reach Python internals"):
        check_template(text)


def test_safe_templates_pass_and_render() -> None:
    text = "{% for r in roles %}{{ r|upper }}{% if not loop.last %}, {% endif %}{% endfor %}: {{ business[:5] }}"
    check_template(text)
    assert render_template(text, {"roles": ["a", "b"], "business": "Rentals"}) == "A, B: Renta"
    assert render_template("{{ '{}!'.format(x) }}", {"x": 1}) == "1!"


def test_the_sandbox_refuses_what_the_static_check_cannot_see(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    dynamic = "{{ (cycler|attr('_' ~ '_init__')|attr('_' ~ '_globals__'))['os'].popen('touch " + \
        marker.as_posix() + "') }}"
    check_template(dynamic)  # the name is built at render time
    with pytest.raises(TemplateProblem, match="sandbox|undefined|unknown"):
        render_template(dynamic, {})
    assert not marker.exists()
    with pytest.raises(TemplateProblem, match="above the template limit"):
        render_template("{{ 'a' * 10000000000 }}", {})
    with pytest.raises(TemplateProblem, match="above the template limit"):
        render_template("{{ 9 ** 999999999 }}", {})
    with pytest.raises(TemplateProblem, match="renders more than"):
        render_template("{% for i in range(99999) %}{{ text }}{% endfor %}", {"text": "x" * 100})
    with pytest.raises(TemplateProblem):
        render_template("{% set x = [] %}{{ x.append(1) }}", {})  # immutable sandbox
    with pytest.raises(TemplateProblem, match="does not parse"):
        compile_template("{% for %}")


def _line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def test_validate_rejects_an_unsafe_task_template_with_file_line_and_key(write_spec, tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    spec = write_spec(f"""
        [[tasks]]
        name = "evil"
        template = "{payload(marker)}"
        """)
    result = dialengine("validate", str(spec))
    assert result.returncode == 2, result.stderr
    line = _line_of(spec, "popen")
    assert f"{spec}:{line}: [tasks[2].template] template accesses '__" in result.stderr
    assert "Traceback" not in result.stderr
    assert not marker.exists()


def test_validate_rejects_an_unsafe_template_in_a_list_and_in_a_template_file(write_spec, tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    spec = write_spec(f"""
        [[tasks]]
        name = "evil"
        template = ["Summarise.\\n{{{{ dialogue }}}}", "{payload(marker)}"]
        """)
    with pytest.raises(UserError) as info:
        load_spec(spec)
    assert info.value.key == "tasks[2].template[1]" and info.value.line == _line_of(spec, "popen")
    (tmp_path / "evil.j2").write_text("Hello\n\n" + payload(marker), encoding="utf-8")
    spec = write_spec("""
        [[tasks]]
        name = "evil"
        template_file = "evil.j2"
        """)
    with pytest.raises(UserError) as info:
        load_spec(spec)
    assert info.value.key == "tasks[2].template_file" and "template line 3" in info.value.message
    assert info.value.line == _line_of(spec, "evil.j2")
    assert not marker.exists()


def test_validate_names_unknown_template_variables(write_spec) -> None:
    spec = write_spec("""
        [[tasks]]
        name = "typo"
        template = "{{ dialoge }}"
        """)
    with pytest.raises(UserError, match="unknown variable.*'dialoge'") as info:
        load_spec(spec)
    assert info.value.key == "tasks[2].template"


def test_apply_until_seeds_never_runs_the_command(write_spec, tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    spec = write_spec(f"""
        [[tasks]]
        name = "evil"
        template = "{payload(marker)}"
        """)
    result = dialengine("apply", str(spec), "--until", "seeds")
    assert result.returncode == 2 and "template accesses" in result.stderr
    assert not marker.exists()
    # with validation bypassed (the model edited after loading), the seeds stage still refuses it
    clean = write_spec(filename="clean.toml")
    loaded = load_spec(clean)
    loaded.tasks[0].template = payload(marker)
    with pytest.raises(UserError, match="template accesses"):
        Runner(loaded, build_registry(), quiet=True).apply(until="seeds")
    assert not marker.exists()


OPERATOR = """
    [evolution]
    rounds = 1

    [[evolution.operators]]
    name = "template"
    {key} = "{value}"
    """


def test_validate_rejects_an_unsafe_operator_prompt_inline_and_in_a_file(write_spec, tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    spec = write_spec(OPERATOR.format(key="template", value=payload(marker)))
    result = dialengine("validate", str(spec), plugins="core,generation")
    assert result.returncode == 2, result.stderr
    assert f"{spec}:{_line_of(spec, 'popen')}: [evolution.operators[0].template] evolution prompt" in result.stderr
    (tmp_path / "op.j2").write_text("Rewrite {{ instruction }}\n" + payload(marker), encoding="utf-8")
    spec = write_spec(OPERATOR.format(key="template_file", value="op.j2"))
    result = dialengine("apply", str(spec), "--until", "evolve", plugins="core,generation")
    assert result.returncode == 2, result.stderr
    assert f"{spec}:{_line_of(spec, 'op.j2')}: [evolution.operators[0].template_file]" in result.stderr
    assert not marker.exists()


def test_the_template_operator_renders_in_the_sandbox(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    view = InstructionView("Summarise.", "pricing", "", "t", "", "A rental agency.", keep_placeholder=False)
    with pytest.raises(UserError, match="evolution prompt template"):
        Template(TemplateConfig(template=payload(marker))).prompt(view)
    ok = Template(TemplateConfig(template="Polish: {{ instruction }} ({{ business_short }})")).prompt(view)
    assert ok == "Polish: Summarise. (A rental agency)"
    assert not marker.exists()


def test_an_operator_prompt_file_that_is_binary_or_missing_is_a_spec_error(write_spec, tmp_path: Path) -> None:
    (tmp_path / "op.bin").write_bytes(b"Rewrite \xff\xfe {{ instruction }}")
    registry = build_registry()
    for name, needle in (("op.bin", "not UTF-8"), ("missing.j2", "missing.j2")):
        spec = write_spec(OPERATOR.format(key="template_file", value=name))
        with pytest.raises(UserError, match=needle) as info:
            load_spec(spec, registry)
        assert info.value.line == _line_of(spec, name)
        assert info.value.key == "evolution.operators[0].template_file"


def test_validate_rejects_a_dynamic_escape_the_sandbox_refuses_on_sample_values(write_spec) -> None:
    spec = write_spec("""
        [[tasks]]
        name = "sly"
        template = "{{ cycler|attr('_' ~ '_init__') }} {{ dialogue }}"
        """)
    with pytest.raises(UserError, match="refused by the sandbox") as info:
        load_spec(spec)
    assert info.value.key == "tasks[2].template" and info.value.line == _line_of(spec, "sly") + 1
