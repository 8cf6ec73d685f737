"""The HTML report: self-contained (no network), every section present for a real run, and
rendered by a real headless Chromium driven over the DevTools protocol: no console errors,
every chart drawn, and a screenshot that is not blank."""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from dialinsight_engine.plugins import build_registry
from dialinsight_engine.run.context import StageContext
from dialinsight_engine.run.dataset import read_output, write_partition
from dialinsight_engine.spec import load_spec
from dialinsight_engine.stages.report import ReportStage

from conftest import dialengine

PLUGINS = "core,generation,quality"
CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
QUALITY = """
[quality]
min_score = 0.3
examples = 5

[quality.metrics.prompt_complexity]
weight = 1.0

[quality.metrics.input_complexity]
weight = 1.0
min = 0.72

[quality.metrics.data_richness]
params = { embeddings = "off" }

[quality.metrics.data_redundancy]
weight = 0.5
normalize = "rank"

[sampling]
n = 20
seed = 1
"""


@pytest.fixture(scope="module")
def report_run(tmp_path_factory) -> tuple[Path, Path]:
    """A real run up to `sample` on the packaged dialogues (plus a copied dialogue so there is
    a duplicate cluster), evaluation rows as the eval stage writes them, then the report stage."""
    from conftest import CORE_SPEC, EXAMPLES

    tmp = tmp_path_factory.mktemp("report")
    lines = (EXAMPLES / "realestate_dialogues.jsonl").read_text(encoding="utf-8").splitlines()
    twin = json.loads(lines[3]) | {"id": "twin_of_3"}
    data = tmp / "dialogues.jsonl"
    data.write_text("\n".join([*lines, json.dumps(twin)]) + "\n", encoding="utf-8")
    spec = tmp / "spec.toml"
    spec.write_text(CORE_SPEC.format(name="r", runs=(tmp / "runs").as_posix(), data=data.as_posix(), on_error="fail")
                    + QUALITY, encoding="utf-8")
    result = dialengine("apply", str(spec), "--until", "sample", plugins=PLUGINS)
    assert result.returncode == 0, result.stderr
    run = tmp / "runs" / "r"
    (run / "eval").mkdir()
    pl.DataFrame({"variant": ["base", "base", "tuned", "tuned"], "evaluator": ["requirements_f1", "gsm8k"] * 2,
                  "metric": ["f1", "accuracy"] * 2, "value": [0.41, 0.22, 0.78, 0.21]}).pipe(lambda df: write_partition(run / "eval", 0, df))
    registry = build_registry()
    ctx = StageContext(spec=load_spec(spec, registry), registry=registry, run_dir=run, stage="report",
                       input_stage="sample", log=logging.getLogger("test"))
    rows = ReportStage().run(ctx)
    assert rows["stage"].to_list()[:3] == ["ingest", "scenes", "seeds"] and "assess" in rows["stage"].to_list()
    assert set(rows["status"]) == {"current"} and (rows["cost_s"] >= 0).all()
    return run, run / "report" / "report.html"


def test_report_is_self_contained_with_every_section(report_run):
    run, path = report_run
    text = path.read_text(encoding="utf-8")
    assert text.count("Plotly.newPlot") >= 6
    for heading in ("Rows by stage", "Quality metrics", "Why rows were dropped", "Scene x task mix",
                    "Duplicate clusters", "Examples", "Evaluation"):
        assert f"<h2>{heading}</h2>" in text, heading
    assert "Funnel" not in text and "<h2>Stale stages</h2>" not in text  # a complete run is not stale
    # costs apart from the last run's time; the dialogue beside the instruction in the examples
    assert "<th>cost_s</th>" in text and "<th>last_run_s</th>" in text and "<th>status</th>" in text
    assert "<th>instruction</th><th>dialogue</th>" in text and "<td class=\"text\"><div class=\"scroll\">Customer: " in text
    for axis in ('"text":"score"', '"text":"rows"', '"text":"rows in cluster"', '"text":"scene"',
                 '"text":"metric"', '"text":"stage"'):
        assert axis in text, axis
    assert "min 0.72" in text  # thresholds in the panel titles
    assert "<script src=" not in text and "<link" not in text, "nothing may load from the network"
    assert text.count("plotly.js v") <= 2, "plotly.js is inlined exactly once"
    assert "input_complexity: score" in text and "near duplicate of" in text
    assert "target" in text and "requirements_f1" in text
    # the CLI writes the same report wherever asked
    out = run.parent / "copy.html"
    result = dialengine("report", str(run), "--out", str(out), plugins=PLUGINS)
    assert result.returncode == 0, result.stderr
    assert out.stat().st_size > 1_000_000


class DevTools:
    """A minimal Chrome DevTools protocol client over one page websocket."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, timeout: float = 60, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self.ws.recv(timeout=max(deadline - time.monotonic(), 0.1)))
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, event: str, timeout: float = 60) -> None:
        if any(e.get("method") == event for e in self.events):
            return
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self.ws.recv(timeout=max(deadline - time.monotonic(), 0.1)))
            self.events.append(message)
            if message.get("method") == event:
                return

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return result["result"].get("value")

    def console_errors(self) -> list[str]:
        errors = []
        for e in self.events:
            params = e.get("params", {})
            if e.get("method") == "Runtime.exceptionThrown":
                errors.append(json.dumps(params.get("exceptionDetails", {}))[:500])
            elif e.get("method") == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                errors.append(json.dumps(params.get("args", []))[:500])
            elif e.get("method") == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                errors.append(params["entry"].get("text", "")[:500])
        return errors


# The page measures its own screenshot: the browser decodes the PNG, a canvas counts colours.
PIXEL_STATS = """
(async (b64) => {
  const img = new Image();
  img.src = 'data:image/png;base64,' + b64;
  await img.decode();
  const c = document.createElement('canvas'); c.width = img.width; c.height = img.height;
  const g = c.getContext('2d'); g.drawImage(img, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data;
  let nonWhite = 0; const colours = new Set();
  for (let i = 0; i < d.length; i += 4 * 7) {
    if (d[i] < 245 || d[i + 1] < 245 || d[i + 2] < 245) nonWhite++;
    colours.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
  }
  return {width: c.width, height: c.height, nonWhite: nonWhite / (d.length / 28), colours: colours.size};
})
"""


# Every title, axis title, annotation and legend of every chart, as drawn: no two may overlap.
OVERLAPS = """(() => {
  const pairs = []; let texts = 0;
  for (const plot of document.querySelectorAll('.js-plotly-plot')) {
    const texts_ = [...plot.querySelectorAll('.infolayer text, .annotation-text')]
      .filter(t => !t.closest('.legend') && t.textContent.trim())
      .map(t => ({text: t.textContent, r: t.getBoundingClientRect()}));
    const legends = [...plot.querySelectorAll('.legend .bg')].map(l => ({text: 'legend', r: l.getBoundingClientRect()}));
    const boxes = [...texts_, ...legends].filter(b => b.r.width > 0 && b.r.height > 0);
    texts += boxes.length;
    for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
      const a = boxes[i].r, b = boxes[j].r;
      const w = Math.min(a.right, b.right) - Math.max(a.left, b.left);
      const h = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
      if (w > 1 && h > 1 && boxes[i].text !== boxes[j].text) pairs.push([boxes[i].text, boxes[j].text]);
    }
  }
  return {texts, pairs};
})()"""


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(report_run, tmp_path):
    pytest.importorskip("websockets", reason="the DevTools client needs the websockets package")
    import httpx
    from websockets.sync.client import connect

    _, path = report_run
    profile = Path(tempfile.mkdtemp(prefix="chromium-", dir=tmp_path))
    proc = subprocess.Popen(
        [str(CHROMIUM), "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--no-first-run", "--disable-extensions", "--remote-debugging-port=0", f"--user-data-dir={profile}",
         "--window-size=1280,900", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "HOME": str(profile)})
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            assert proc.poll() is None and time.monotonic() < deadline, "chromium did not start"
            time.sleep(0.2)
        port = int(port_file.read_text().split()[0])
        targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        page = next(t for t in targets if t["type"] == "page")
        with connect(page["webSocketDebuggerUrl"], max_size=64 * 1024 * 1024, open_timeout=30) as ws:
            _drive(DevTools(ws), path)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _drive(tools: DevTools, path: Path) -> None:
    for domain in ("Page", "Runtime", "Log"):
        tools.call(f"{domain}.enable")
    tools.call("Page.navigate", url=path.as_uri())
    tools.wait_for("Page.loadEventFired", timeout=90)
    state = tools.evaluate("""(async () => {
        await new Promise(r => setTimeout(r, 500));
        const plots = [...document.querySelectorAll('.js-plotly-plot')];
        return {plots: plots.length, drawn: plots.filter(p => p.querySelector('.main-svg')).length,
                traces: plots.map(p => (p.data || []).length),
                marks: document.querySelectorAll('.js-plotly-plot .point, .js-plotly-plot .heatmaplayer image').length,
                barLabels: [...document.querySelectorAll('.js-plotly-plot .bartext')].map(t => t.textContent),
                height: document.documentElement.scrollHeight};
    })()""")
    overlaps = tools.evaluate(OVERLAPS)
    assert tools.console_errors() == [], tools.console_errors()
    assert state["plots"] >= 6 and state["drawn"] == state["plots"], state
    assert all(n > 0 for n in state["traces"]) and state["marks"] > 20, state
    # the rows-by-stage bars carry their counts
    assert len(state["barLabels"]) >= 10 and all(t.strip().isdigit() for t in state["barLabels"]), state
    assert overlaps["texts"] > 30 and overlaps["pairs"] == [], overlaps
    shot = tools.call("Page.captureScreenshot", format="png", captureBeyondViewport=True, timeout=120)
    png = base64.b64decode(shot["data"])
    (path.parent / "report.png").write_bytes(png)
    stats = tools.evaluate(f"{PIXEL_STATS}({json.dumps(shot['data'])})")
    assert stats["height"] >= 2000 and stats["width"] >= 1200, stats
    assert stats["nonWhite"] > 0.05 and stats["colours"] > 50, f"screenshot looks blank: {stats}"


def test_partial_rerun_marks_stale_stages_and_keeps_costs(tmp_path) -> None:
    """`--until assess` after a threshold change: sample was built from the old assess output,
    so the report and `explain` say it is stale; a forced rerun that reproduces its output
    keeps what producing it cost."""
    from conftest import CORE_SPEC, EXAMPLES

    spec = tmp_path / "spec.toml"
    text = CORE_SPEC.format(name="s", runs=(tmp_path / "runs").as_posix(),
                            data=(EXAMPLES / "realestate_dialogues.jsonl").as_posix(), on_error="fail") + QUALITY
    spec.write_text(text, encoding="utf-8")
    assert dialengine("apply", str(spec), "--until", "sample", plugins=PLUGINS).returncode == 0
    run = tmp_path / "runs" / "s"
    first = json.loads((run / "scenes" / "manifest.json").read_text())
    result = dialengine("apply", str(spec), "--until", "sample", "--force", "scenes", plugins=PLUGINS)
    assert result.returncode == 0, result.stderr
    again = json.loads((run / "scenes" / "manifest.json").read_text())
    assert again["output_hash"] == first["output_hash"]
    assert again["cost_seconds"] == max(first["cost_seconds"], again["seconds"])

    spec.write_text(text.replace("min_score = 0.3", "min_score = 0.45"), encoding="utf-8")
    result = dialengine("apply", str(spec), "--until", "assess", plugins=PLUGINS)
    assert result.returncode == 0, result.stderr
    from dialinsight_engine.report.html import build_report
    from dialinsight_engine.report.runinfo import stage_rows, stale_stages

    assert stale_stages(run) == {"sample": "assess output changed since it ran"}
    rows = stage_rows(run)
    assert rows.filter(pl.col("stage") == "sample")["status"].item().startswith("stale")
    page = build_report(run)
    assert "<h2>Stale stages</h2>" in page and "<li><b>sample</b>: assess output changed" in page
    assert "STALE: sample" in page  # the mix section reads the stale sample output

    row_id = read_output(run / "sample")["instruction_id"][0]
    result = dialengine("explain", str(run), row_id, "--json", plugins=PLUGINS)
    assert result.returncode == 0, result.stderr
    explained = json.loads(result.stdout)
    assert explained["stale"] == {"sample": "assess output changed since it ran"}
    assert [e.get("stale") for e in explained["stages"] if e["stage"] == "sample"] == [
        "assess output changed since it ran"]
    human = dialengine("explain", str(run), row_id, plugins=PLUGINS)
    assert "stale (assess output changed since it ran)" in human.stdout
