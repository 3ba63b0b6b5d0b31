"""The local mode: every stage of an experiment as a local process, on this machine.

It runs the very `prospect stage ...` commands that the operator runs as pods, in the same order,
and serves the models with local vLLM processes instead of Deployments. What each stage leaves
is in the store (by default the run folder `runs/<name>/`), so a second `prospect run` after a
crash or a Ctrl-C picks up where the first stopped: grading asks only for missing answers, the
writer returns the same dataset version, and a finished training is not repeated.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prospect.documents import ExperimentFile
from prospect.runner import TARGET_AFTER, TARGET_BEFORE, TRAINING_KEY, Context
from prospect.spec import Role
from prospect.stages.serve import VllmServer, core_plan, discover_model_name, running

__all__ = ["LocalRun", "StageFailed"]

log = logging.getLogger("prospect")


class StageFailed(RuntimeError):
    """A stage process exited non-zero; its own output already told the user why."""


@dataclass
class LocalRun:
    file: ExperimentFile
    run_dir: Path
    metrics_port: int | None = None
    verbose: bool = False

    def __post_init__(self) -> None:
        self.ctx = Context.open(self.file, run_dir=self.run_dir)
        self.spec = self.file.experiment.spec

    # Running one stage.

    def stage(self, name: str, *args: str, threads: int | None = None) -> dict[str, Any]:
        """Run `prospect stage <name>` as a process and return the summary it wrote."""
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
            summary_path = Path(tmp.name)
        command = [
            sys.executable,
            "-m",
            "prospect.cli",
            *(["--verbose"] if self.verbose else []),
            "stage",
            name,
            "-f",
            str(self.file.path),
            "--run-dir",
            str(self.run_dir),
            "--summary",
            str(summary_path),
            *args,
        ]
        env = dict(os.environ, HF_HUB_OFFLINE="1")
        if threads is not None:
            env["OMP_NUM_THREADS"] = str(threads)
        if self.metrics_port is not None:
            env["PROSPECT_METRICS_PORT"] = str(self.metrics_port)
        log.debug("running %s", " ".join(command))
        try:
            code = subprocess.call(command, env=env)
            if code != 0:
                raise StageFailed(f"stage {name} failed (exit code {code})")
            text = summary_path.read_text()
            return json.loads(text) if text.strip() else {}
        finally:
            summary_path.unlink(missing_ok=True)

    # Serving.

    def _server(self, role: str, path: Path, cpus: str, *, max_model_len: int) -> VllmServer:
        competitor = self.spec.competitors.by_role(
            Role(role) if role in {"large", "small"} else (self.spec.training.target or Role.SMALL)
        )
        return VllmServer(
            model_path=path,
            served_name=competitor.served_model_name or role,
            log_path=self.run_dir / "logs" / f"vllm-{role}.log",
            cpus=cpus,
            max_model_len=max_model_len,
            extra_args=tuple(competitor.serving.extra_args),
        )

    def _timeout(self) -> float:
        return float(
            max(
                c.serving.startup_timeout_seconds
                for c in (self.spec.competitors.large, self.spec.competitors.small)
            )
        )

    def _missing(self, roles: Sequence[str], *, held_out_only: bool) -> int:
        """Answers still to grade for these roles, from what the store already holds."""
        from prospect.records import Split
        from prospect.stages.grade import read_records
        from prospect.stages.prepare import read_exam

        exam = read_exam(self.ctx.store)
        wanted = {
            item.id for item in exam.items if not held_out_only or item.split is Split.HELD_OUT
        }
        done = {
            (r.item_id, r.role)
            for r in read_records(self.ctx.store)
            if r.item_id in wanted and r.role in roles
        }
        return len(wanted) * len(roles) - len(done)

    def grade(self) -> dict[str, Any]:
        """Serve both competitors (unless they are endpoints) and grade every item; when every
        answer is already graded, serve nothing."""
        from prospect.stages.prepare import ITEMS_KEY

        if not self.ctx.store.exists(ITEMS_KEY):
            self.stage("prepare")
        if self._missing([r.value for r in Role], held_out_only=False) == 0:
            log.info("every item is already graded for both competitors; not serving them")
            return {"skipped": True}
        for role in Role:
            given = self.spec.competitors.by_role(role).endpoint
            if given is not None:
                # An endpoint that does not answer is found before any server is started.
                discover_model_name(given)
        endpoints: list[str] = []
        servers: list[VllmServer] = []
        launched = [role for role in Role if self.spec.competitors.by_role(role).model is not None]
        plan = core_plan(len(launched))
        for role in Role:
            competitor = self.spec.competitors.by_role(role)
            if competitor.endpoint is not None:
                endpoints.append(f"{role.value}={competitor.endpoint}")
                continue
            resolved = self.stage("resolve", "--role", role.value)
            server = self._server(
                role.value,
                Path(resolved["path"]),
                plan[launched.index(role)],
                max_model_len=competitor.serving.max_model_len,
            )
            servers.append(server)
            endpoints.append(f"{role.value}={server.base_url}")

        extractor = self.spec.supervisor.extractor
        args = [a for e in endpoints for a in ("--endpoint", e)]
        if extractor is not None and extractor.competitor is not None:
            url = dict(e.split("=", 1) for e in endpoints)[extractor.competitor.value]
            args += ["--extractor", url]
        with running(servers, timeout=self._timeout()):
            return self.stage("grade", *args, threads=1)

    def evaluate(self) -> dict[str, Any]:
        """Serve the trained target (and the untrained one when it is no competitor) and grade
        the held-out items."""
        roles_wanted = [TARGET_AFTER] + (
            [TARGET_BEFORE] if self.spec.training.target is None else []
        )
        if self._missing(roles_wanted, held_out_only=True) == 0:
            log.info("the trained target is already graded on every held-out item")
            return {"skipped": True}
        trained = self.run_dir / "work" / "trained"
        self.stage("fetch-model", "--to", str(trained))
        max_len = self.spec.competitors.by_role(
            self.spec.training.target or Role.SMALL
        ).serving.max_model_len
        roles: list[tuple[str, Path]] = [(TARGET_AFTER, trained)]
        if self.spec.training.target is None:
            resolved = self.stage("resolve", "--role", "target")
            roles.append((TARGET_BEFORE, Path(resolved["path"])))
        plan = core_plan(len(roles))
        servers = [
            self._server(role, path, plan[i], max_model_len=max_len)
            for i, (role, path) in enumerate(roles)
        ]
        args = [
            a
            for role, server in zip(roles, servers, strict=True)
            for a in ("--endpoint", f"{role[0]}={server.base_url}")
        ]
        try:
            with running(servers, timeout=self._timeout()):
                return self.stage("evaluate", *args, threads=1)
        finally:
            # A copy of the model in the store, only needed while it was served.
            shutil.rmtree(trained, ignore_errors=True)

    # The whole experiment.

    def run(self, stages: Sequence[str] | None = None) -> dict[str, Any]:
        wanted = set(stages or ("prepare", "grade", "write", "train", "evaluate", "report"))
        results: dict[str, Any] = {}
        if "prepare" in wanted:
            results["prepare"] = self.stage("prepare")
        if "grade" in wanted:
            results["grade"] = self.grade()
        if "write" in wanted:
            results["write"] = self.stage("write")
        training = self.spec.training
        if training.enabled and "train" in wanted:
            results["train"] = self._train_once(results.get("write", {}))
        if training.enabled and self.spec.evaluation.enabled and "evaluate" in wanted:
            results["evaluate"] = self.evaluate()
        if "report" in wanted:
            results["report"] = self.stage("report")
        return results

    def _train_once(self, written: dict[str, Any]) -> dict[str, Any]:
        store = self.ctx.store
        if store.exists(TRAINING_KEY):
            done = json.loads(store.get_bytes(TRAINING_KEY))
            if written and done.get("datasetVersion") == written.get("datasetVersion"):
                log.info(
                    "the target was already trained on dataset %s; not training again",
                    done["datasetVersion"],
                )
                return {k: v for k, v in done.items() if k != "history"}
        return self.stage("train", threads=os.cpu_count() or 1)
