"""Load on the HTTP server from a second process over loopback: throughput, latency, errors.

Starts `mmfuse serve` on the demo model (training it first if `make demo` has not), then sends
easy-VQA test images and questions from 32 concurrent clients.

Run: .venv/bin/python -m benchmarks.serve_load [--smoke]   (writes
benchmarks/results/serve_load.json; --smoke: a tiny model and a few requests, writes nothing)
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks.common import write_result
from mmfuse.data.builtin import DATASETS

MODEL = Path("runs/demo/fused")


async def drive(url: str, requests: list[tuple[bytes, str]], clients: int, limit_s: float):
    latencies, statuses = [], Counter()
    queue: asyncio.Queue[tuple[bytes, str]] = asyncio.Queue()
    for request in requests:
        queue.put_nowait(request)
    stop_at = time.perf_counter() + limit_s

    async def client(session: httpx.AsyncClient) -> None:
        while not queue.empty() and time.perf_counter() < stop_at:
            image, question = queue.get_nowait()
            started = time.perf_counter()
            try:
                response = await session.post(f"{url}/v1/predict", files={"image": ("q.png", image)},
                                              data={"text": question})
                statuses[response.status_code] += 1
            except httpx.HTTPError as error:
                statuses[type(error).__name__] += 1
            latencies.append(time.perf_counter() - started)

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return latencies, statuses, elapsed


def tiny_model(folder: Path) -> Path:
    """A model trained for one epoch on a few easy-VQA rows (the smoke run's)."""
    from mmfuse import Config, DataConfig, Predictor, TrainConfig

    config = Config(data=DataConfig(image_cols=["image"], text_cols=["question"],
                                    label_col="answer"),
                    train=TrainConfig(epochs=1), cache_dir=str(folder / "cache"))
    Predictor(config).fit(DATASETS.get("easy-vqa")().splits["train"].head(64)).save(
        folder / "model")
    return folder / "model"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--limit-s", type=float, default=300)
    parser.add_argument("--smoke", action="store_true",
                        help="a tiny model, 12 requests from 3 clients; writes nothing")
    args = parser.parse_args(argv)
    if args.smoke:
        args.requests, args.clients = 12, 3
        with tempfile.TemporaryDirectory(prefix="mmfuse-serve-load-") as temp:
            return measure(args, tiny_model(Path(temp)))
    if not (MODEL / "model.safetensors").exists():
        from mmfuse.demo import run_demo

        run_demo(MODEL.parent)
    result = measure(args, MODEL)
    print(f"written to {write_result('serve_load', result)}")
    return result


def measure(args: argparse.Namespace, model: Path) -> dict[str, Any]:
    """Serve ``model`` in a process of its own and drive it; the figures."""
    test = DATASETS.get("easy-vqa")().splits["test"].sample(args.requests, random_state=0)
    requests = [(Path(p).read_bytes(), q) for p, q in zip(test["image"], test["question"],
                                                           strict=True)]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "mmfuse", "serve", str(model), "--port",
                               str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/v1/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the server did not start")
            time.sleep(0.2)
        latencies, statuses, elapsed = asyncio.run(
            drive(url, requests, args.clients, args.limit_s))
    finally:
        server.terminate()
        server.wait(30)
    ms = 1000 * np.asarray(latencies)
    result = {
        "model": str(model), "clients": args.clients, "requests_sent": len(latencies),
        "seconds": elapsed, "requests_per_second": len(latencies) / elapsed,
        "latency_ms": {f"p{q}": float(np.percentile(ms, q)) for q in (50, 95, 99)},
        "status_counts": {str(k): v for k, v in statuses.items()},
        "errors_5xx": sum(v for k, v in statuses.items() if str(k).startswith("5")),
    }
    print(f"{len(latencies)} requests from {args.clients} clients in {elapsed:.1f} s: "
          f"{result['requests_per_second']:.1f} req/s; latency p50 {result['latency_ms']['p50']:.0f} ms,"
          f" p95 {result['latency_ms']['p95']:.0f} ms, p99 {result['latency_ms']['p99']:.0f} ms; "
          f"statuses {dict(statuses)}")
    return result


if __name__ == "__main__":
    main()
