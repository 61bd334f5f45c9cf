"""Jinja2 rendering of a ``Result``; it reads only ``result.json``'s model, never earlier stages.

Markdown is escaped by default (every ``{{ }}`` goes through ``md`` unless the template marks a
value as trusted Markup); HTML uses Jinja's autoescape.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from grader.contracts.observations import Environment as RunEnvironment
from grader.contracts.observations import Estimate
from grader.contracts.result import CheckStatus, Result
from grader.report import machine
from grader.report.charts import chart_data_uri
from grader.report.escape import marker_value, md, visible_html
from grader.report.labels import label, pair_label

STATUS_ICON = {
    CheckStatus.PASS: "✅",
    CheckStatus.PARTIAL: "🟡",
    CheckStatus.FAIL: "❌",
    CheckStatus.SKIPPED: "⏭️",
    CheckStatus.ERROR: "💥",
}
VERDICT = {
    "graded": "Graded",
    "rejected": "Not graded: please fix the problems below",
    "error": "Grader error (not charged to you)",
}
MARKER_PREFIX = "compression-grader"
COMMENT_LIMIT = 65_536
TRUNCATED = "\n\n*(report truncated to fit GitHub's comment limit; see report.html in the run's artifacts)*\n"


@dataclass
class MetricRow:
    name: str
    values: dict[str, str]
    ratio: str

    @property
    def label(self) -> str:
        return label(self.name)


def marker(result: Result) -> str:
    """The hidden line that lets a publisher find and update this comment in place."""
    team = marker_value(result.submission.team)
    assignment = marker_value(result.assignment.id)
    return f"<!-- {MARKER_PREFIX}:v1 team={team} assignment={assignment} -->"


def fmt(estimate: Estimate | None) -> str:
    if estimate is not None and estimate.pending:
        return "pending (GPU runner)"
    if estimate is None or estimate.value is None:
        return "—"
    value = estimate.value
    text = f"{value:,.0f}" if abs(value) >= 10000 else f"{value:.4g}"
    if estimate.low is not None and estimate.high is not None:
        text += f" [{estimate.low:.3g}–{estimate.high:.3g}]"
    return f"{text} {estimate.unit}".strip() if estimate.unit not in ("", "x") else text + (estimate.unit or "")


def metric_table(result: Result) -> tuple[list[str], list[MetricRow]]:
    """Side by side: one column per model role, plus the candidate-vs-reference figure if any."""
    roles: list[str] = []
    names: list[str] = []
    pair_figures: dict[str, Estimate] = {}
    for key, est in result.metrics.items():
        owner, _, name = key.partition(".")
        if "_vs_" in owner:
            pair_figures[name] = est
            continue
        if owner not in roles:
            roles.append(owner)
        if name not in names:
            names.append(name)
    rows = [MetricRow(n, {r: fmt(result.metrics.get(f"{r}.{n}")) for r in roles}, "") for n in names]
    ratio_for = {"size_mb": "size_ratio", "gzip_mb": "gzip_ratio"}
    for row in rows:
        if row.name in ratio_for:
            row.ratio = fmt(pair_figures.get(ratio_for[row.name]))
        elif row.name.startswith("latency_ms_b"):
            row.ratio = fmt(pair_figures.get("speedup_b" + row.name.removeprefix("latency_ms_b")))
    return roles, rows


# comparison figures that only matter where a check judges them (hw6's parity): elsewhere a large
# relative difference on near-zero logits alarms without meaning anything
JUDGED_ONLY = ("tolerance_ratio", "max_rel_error")


def pair_rows(result: Result) -> list[tuple[str, str]]:
    """Comparison figures by their human names; parity figures only where a check judged them."""
    judged = {k for c in result.checks for k in c.evidence}
    return [
        (pair_label(key), fmt(est))
        for key, est in result.metrics.items()
        if "_vs_" in key.partition(".")[0] and (key.partition(".")[2] not in JUDGED_ONLY or key in judged)
    ]


def device_summary(environment: RunEnvironment) -> str:
    """Where the models ran, in one line: the device, and for a GPU what a reader needs to judge
    its times (model, driver, clocks and temperature at the start and the end, persistence)."""
    gpu = environment.gpu_facts
    if gpu is None:
        return environment.device
    parts = [gpu.name or environment.gpu]
    parts += [f"driver {gpu.driver}"] if gpu.driver else []
    parts += [f"compute capability {gpu.compute_capability}"] if gpu.compute_capability else []
    parts += [f"{gpu.memory_mb} MiB"] if gpu.memory_mb else []
    parts += [f"persistence {gpu.persistence_mode}"] if gpu.persistence_mode else []
    for moment, state in (("start", gpu.start), ("end", gpu.end)):
        if state is not None:
            parts.append(
                f"{moment}: SM {state.sm_clock_mhz or '?'} MHz, memory {state.memory_clock_mhz or '?'} MHz, "
                f"{state.temperature_c if state.temperature_c is not None else '?'} °C"
            )
    if gpu.clocks_moved:
        parts.append(f"clocks moved: {gpu.clocks_moved}")
    return f"{environment.device}: " + "; ".join(parts)


def _environment(autoescape: bool) -> Environment:
    env = Environment(
        loader=PackageLoader("grader.report", "templates"),
        autoescape=select_autoescape(["html.j2"]) if autoescape else False,
        finalize=visible_html if autoescape else md,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(
        icon=lambda s: Markup(STATUS_ICON[s]),
        fmt=fmt,
        verdict=VERDICT,
        trusted=Markup,
        chart_uri=chart_data_uri,
        device_summary=device_summary,
    )
    env.filters["md"] = md
    env.filters["jsontext"] = lambda value: json.dumps(value, ensure_ascii=False, default=str)  # plain str: escaped
    return env


def _context(result: Result) -> dict[str, object]:
    roles, rows = metric_table(result)
    return {"r": result, "roles": roles, "rows": rows, "pairs": pair_rows(result), "marker": Markup(marker(result))}


def render_markdown(result: Result) -> str:
    """The PR comment, ending in the machine-readable block.

    If it would exceed GitHub's limit, the evidence details go first, then the tail of the
    human part; the verdict at the top and the block at the end always stay.
    """
    template = _environment(autoescape=False).get_template("comment.md.j2")
    block = "\n" + machine.encode(result) + "\n"
    body = template.render(**_context(result), details=True)
    if len(body) + len(block) > COMMENT_LIMIT:
        body = template.render(**_context(result), details=False)
    room = COMMENT_LIMIT - len(block)
    if len(body) > room:
        body = body[: room - len(TRUNCATED)] + TRUNCATED
    return body + block


def render_markdown_template(name: str, **context: object) -> str:
    """Any Markdown template in ``report/templates`` with the same escaping as the PR comment."""
    return _environment(autoescape=False).get_template(name).render(**context)


def render_html(result: Result) -> str:
    return _environment(autoescape=True).get_template("report.html.j2").render(**_context(result))


def write_reports(result: Result, out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"result": out_dir / "result.json", "markdown": out_dir / "report.md", "html": out_dir / "report.html"}
    paths["result"].write_text(result.to_json(), encoding="utf-8")
    paths["markdown"].write_text(render_markdown(result), encoding="utf-8")
    paths["html"].write_text(render_html(result), encoding="utf-8")
    return paths
