"""The report: what happened, in numbers a researcher can quote, with plots.

`report/report.json` holds every figure, `report/report.md` says it in words, and three PNGs show
the verdicts per competitor, the training curves and the held-out accuracy before and after.
"""

from __future__ import annotations

import io
import json
import logging
import math
from collections import Counter
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from prospect.comparison import accuracy, compare
from prospect.records import GradedRecord, Verdict
from prospect.spec import ProspectExperiment, Role
from prospect.storage import DirStore, Store

__all__ = ["build_report", "write_report"]

log = logging.getLogger("prospect")


def _optional_json(store: Store, key: str) -> Any:
    return json.loads(store.get_bytes(key)) if store.exists(key) else None


def build_report(store: Store, *, experiment: ProspectExperiment) -> dict[str, Any]:
    """Every figure of the report, from what the stages left in the store."""
    from prospect.runner import EVALUATION_KEY, TRAINING_KEY
    from prospect.stages.grade import read_records
    from prospect.stages.write import latest_version

    spec = experiment.spec
    records = read_records(store)
    by_role: dict[str, list[GradedRecord]] = {}
    for record in records:
        by_role.setdefault(record.role, []).append(record)

    competitors: dict[str, Any] = {}
    for role in Role:
        rows = by_role.get(role.value, [])
        verdicts = Counter(r.verdict.value for r in rows)
        acc = accuracy(verdicts[Verdict.CORRECT.value], len(rows))
        competitor = spec.competitors.by_role(role)
        competitors[role.value] = {
            "model": competitor.model or competitor.endpoint,
            "answers": len(rows),
            "verdicts": {v.value: verdicts[v.value] for v in Verdict},
            "accuracy": acc.as_dict(),
            "completionTokens": sum(r.completion_tokens for r in rows),
            "meanLatencySeconds": (
                sum(r.latency_seconds for r in rows) / len(rows) if rows else None
            ),
        }

    large = {r.item_id: r.verdict.is_correct for r in by_role.get(Role.LARGE.value, [])}
    small = {r.item_id: r.verdict.is_correct for r in by_role.get(Role.SMALL.value, [])}
    gap = compare(large, small)
    manifest = latest_version(store)
    training = _optional_json(store, TRAINING_KEY)
    evaluation = _optional_json(store, EVALUATION_KEY)
    benchmark = _optional_json(store, "items/benchmark.json")

    return {
        "experiment": experiment.name,
        "specDigest": spec.digest(),
        "benchmark": benchmark,
        "competitors": competitors,
        "gap": {
            **gap.as_dict(),
            "statement": _gap_statement(gap.as_dict()),
        },
        "dataset": None
        if manifest is None
        else {
            "version": manifest.version,
            "uri": store.uri(f"dataset/{manifest.version}"),
            "digest": manifest.content_digest,
            "counts": manifest.counts,
        },
        "training": training,
        "evaluation": evaluation,
    }


def _gap_statement(gap: dict[str, Any]) -> str:
    if not gap["items"]:
        return "no item was answered by both competitors"
    diff, low, high = gap["difference"], gap["low"], gap["high"]
    interval = f"{diff:+.1%} (95% CI {low:+.1%} to {high:+.1%}, McNemar p={gap['p_value']:.3f})"
    if gap["distinct"]:
        leader = "large" if diff > 0 else "small"
        return f"the {leader} competitor is more accurate: large minus small = {interval}"
    return (
        "the competitors are statistically tied on these items: large minus small = "
        f"{interval}; a larger sample or more different models would separate them"
    )


def _verdict_plot(report: dict[str, Any]) -> bytes:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    roles = list(report["competitors"])
    colors = {"correct": "#2e7d32", "incorrect": "#c62828", "unparseable": "#9e9e9e"}
    bottom = [0] * len(roles)
    for verdict in Verdict:
        heights = [report["competitors"][r]["verdicts"][verdict.value] for r in roles]
        ax.bar(roles, heights, bottom=bottom, label=verdict.value, color=colors[verdict.value])
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    ax.set_ylabel("answers")
    ax.set_ylim(0, max(bottom, default=0) * 1.3 + 1)
    ax.set_title("Verdicts per competitor")
    ax.legend(loc="upper center", ncol=3, frameon=False)
    return _png(fig)


def _training_plot(training: dict[str, Any]) -> bytes:
    history = [h for h in training.get("history", []) if "loss" in h and "step" in h]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = [h["step"] for h in history]
    ax.plot(steps, [h["loss"] for h in history], marker="o", label="loss")
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "kl"):
        points = [(h["step"], h[key]) for h in history if key in h]
        if points:
            ax.plot(*zip(*points, strict=True), marker=".", label=key)
    ax.set_xlabel("step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"Training ({training.get('method', '?').upper()})")
    ax.legend()
    return _png(fig)


def _evaluation_plot(evaluation: dict[str, Any]) -> bytes:
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    labels: list[str] = []
    values: list[float] = []
    errors: list[list[float]] = [[], []]
    for when in ("before", "after"):
        acc = evaluation[f"{when}Accuracy"]
        if acc["total"]:
            labels.append(when)
            values.append(acc["value"])
            errors[0].append(acc["value"] - acc["low"])
            errors[1].append(acc["high"] - acc["value"])
    ax.bar(labels, values, yerr=errors, capsize=6, color=["#1565c0", "#6a1b9a"][: len(labels)])
    ax.set_ylim(0, 1)
    ax.set_ylabel("held-out accuracy")
    ax.set_title("Target before and after training")
    return _png(fig)


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def _pct(acc: dict[str, Any]) -> str:
    if not acc["total"] or math.isnan(acc["value"]):
        return "n/a"
    interval = f"[{acc['low']:.1%}, {acc['high']:.1%}]"
    return f"{acc['value']:.1%} {interval} ({acc['correct']}/{acc['total']})"


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _markdown(report: dict[str, Any]) -> str:
    lines = [f"# Experiment {report['experiment']}", ""]
    bench = report.get("benchmark") or {}
    if bench:
        lines += [
            f"Benchmark `{bench.get('format')}` from `{bench.get('source')}`: "
            f"{bench.get('items')} items ({bench.get('heldOut')} held out), "
            f"{bench.get('setAside')} rows set aside as malformed.",
            "",
        ]
    lines += [
        "## Competitors",
        "",
        "| role | model | accuracy (95% CI) | unparseable |",
        "|---|---|---|---|",
    ]
    for role, c in report["competitors"].items():
        lines.append(
            f"| {role} | `{c['model']}` | {_pct(c['accuracy'])} | {c['verdicts']['unparseable']} |"
        )
    gap = report["gap"]
    lines += ["", f"**Gap:** {gap['statement']}.", ""]
    lines += [
        f"Both right on {gap['both_correct']} items, both wrong on {gap['both_wrong']}, only "
        f"large right on {gap['only_a']}, only small right on {gap['only_b']}.",
        "",
        "![verdicts](verdicts.png)",
        "",
    ]
    dataset = report.get("dataset")
    if dataset:
        lines += [
            "## Dataset",
            "",
            f"Version `{dataset['version']}` at `{dataset['uri']}` "
            f"(content sha256 `{dataset['digest'][:16]}…`).",
            "",
        ]
        for name, counts in dataset["counts"].items():
            lines.append(f"- {name}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        lines.append("")
    training = report.get("training")
    if training:
        lines += [
            "## Training",
            "",
            f"{training['method'].upper()} on `{training['target']}`, {training['steps']} steps, "
            f"final loss {_number(training['finalLoss'])}, in {training['seconds']:.0f} s.",
        ]
        if training.get("undesirableWeight") is not None:
            lines.append(
                f"Loss aversion: undesirable weight {training['undesirableWeight']:.3g}, "
                f"desirable weight {training['desirableWeight']:.3g} "
                f"({training['nUndesirable']} undesirable, {training['nDesirable']} desirable)."
            )
        lines += ["", "![training](training.png)", ""]
    evaluation = report.get("evaluation")
    if evaluation:
        diff = evaluation["difference"]
        lines += [
            "## Held-out evaluation",
            "",
            f"- before: {_pct(evaluation['beforeAccuracy'])}",
            f"- after: {_pct(evaluation['afterAccuracy'])}",
        ]
        if diff["items"]:
            lines.append(
                f"- after minus before: {diff['difference']:+.1%} "
                f"(95% CI {diff['low']:+.1%} to {diff['high']:+.1%}, p={diff['p_value']:.3f})"
            )
        lines += ["", "![evaluation](evaluation.png)", ""]
    return "\n".join(lines)


def write_report(
    store: Store, *, experiment: ProspectExperiment, run_dir: Path | None = None
) -> dict[str, Any]:
    """Build the report and write it to `report/` in the store (and in the run folder)."""
    report = build_report(store, experiment=experiment)
    files: dict[str, bytes] = {
        "report.json": json.dumps(report, indent=2, default=str).encode(),
        "verdicts.png": _verdict_plot(report),
    }
    if report.get("training"):
        files["training.png"] = _training_plot(report["training"])
    if report.get("evaluation") and report["evaluation"]["afterAccuracy"]["total"]:
        files["evaluation.png"] = _evaluation_plot(report["evaluation"])
    files["report.md"] = _markdown(report).encode()

    for name, data in files.items():
        store.put_bytes(f"report/{name}", data)
        # A report kept in S3 is copied to the run folder too, where a user looks first.
        if run_dir is not None and not isinstance(store, DirStore):
            (run_dir / "report").mkdir(parents=True, exist_ok=True)
            (run_dir / "report" / name).write_bytes(data)
    log.info("report written to %s", store.uri("report/report.md"))

    gap = report["gap"]
    return {
        "competitorsDistinct": gap["distinct"],
        "accuracy": {r: c["accuracy"]["value"] for r, c in report["competitors"].items()},
        "gapLow": gap["low"],
        "gapHigh": gap["high"],
        "reportUri": store.uri("report/report.md"),
    }
