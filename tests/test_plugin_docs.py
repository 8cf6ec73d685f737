"""The worked examples of docs/plugins.md are real: the operator and the backend are taken
from the page as written, installed as plugins (dist-info with entry points), and run with
the page's spec snippet through `dialengine apply` against an in-house service on 127.0.0.1."""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl

from dialinsight_engine.run.dataset import read_output

from conftest import REPO, dialengine, install_plugin
from servers import ChatServer, Reply, Request

DOC = REPO / "docs" / "plugins.md"
ANSWER = "The customer wants two bedrooms in Fremont."
SAMPLING = """
[sampling]
n = 4
seed = 2
"""


def examples() -> dict[str, str]:
    """Each fenced block that follows `<!-- example: NAME -->` in the page, by NAME."""
    found = re.findall(r"<!-- example: (\S+) -->\n```\w+\n(.*?)\n```", DOC.read_text(encoding="utf-8"), flags=re.S)
    return dict(found)


def inhouse_service(request: Request) -> Reply:
    """The in-house completion API: a rewrite for operator requests, an answer otherwise."""
    prompt = request.body["prompt"]
    if "\nTask: " in prompt:
        task = prompt.rsplit("\nTask: ", 1)[1]
        audience = re.search(r"written for (.+?)\.", prompt)
        text = f"{task} Write the answer for {audience.group(1) if audience else 'anyone'}, in plain words."
    else:
        text = ANSWER
    return 200, {}, json.dumps({"text": text, "tokens": len(text.split())}).encode()


def test_the_operator_and_backend_examples_run_as_written(write_spec, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code = examples()
    assert {"dialinsight_audience.py", "dialinsight_inhouse.py", "spec"} <= set(code)
    site = tmp_path / "site"
    install_plugin(site, "dialinsight-audience", "dialinsight_audience", code["dialinsight_audience.py"], entry="audience")
    env = install_plugin(site, "dialinsight-inhouse", "dialinsight_inhouse", code["dialinsight_inhouse.py"],
                         entry="inhouse")
    server = ChatServer(inhouse_service)
    try:
        snippet = code["spec"].replace("http://127.0.0.1:8000/generate", f"http://127.0.0.1:{server.port}/generate")
        assert snippet != code["spec"], "the doc's spec names the service's URL"
        spec = write_spec(snippet.replace("[labels]\n", "[labels]\nmax_tokens = 24\n") + SAMPLING)
        result = dialengine("apply", str(spec), "--until", "label", env=env,
                            plugins="core,generation,quality,audience,inhouse")
        assert result.returncode == 0, result.stderr[-3000:]
    finally:
        server.close()
    run = tmp_path / "runs" / "t"
    evolved = read_output(run / "evolve")
    children = evolved.filter(pl.col("round") == 1)
    assert children.height > 0 and set(children["operator"]) == {"for_audience"}
    kept = children.filter(pl.col("kept"))
    assert kept.height > 0 and kept["instruction"].str.contains("for a new letting agent").all()
    asked = [p for p in server.prompts if "\nTask: " in p]
    assert asked and all("answer is written for a new letting agent." in p for p in asked)
    assert len(asked) == len(set(asked)), "the client sends each distinct request once"
    labels = read_output(run / "label")
    assert labels.height == 4 and (labels["response"] == ANSWER).all()
    manifest = json.loads((run / "label" / "manifest.json").read_text())
    assert manifest["stats"]["backend"]["inhouse"]["completion_tokens"] == 4 * len(ANSWER.split())
    assert manifest["extra"]["plugins"]["backend:inhouse"] == "dialinsight-inhouse==0.0.1"
