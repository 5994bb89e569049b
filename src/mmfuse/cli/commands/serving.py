"""Serving a model over HTTP and exporting it to ONNX: serve, export."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mmfuse.cli.app import (
    Opt,
    app,
    friendly,
    out,
    writable_file,
)
from mmfuse.cli.sources import dataset_or_path
from mmfuse.errors import ConfigError


@app.command()
@friendly
def serve(
    run: Annotated[Path, typer.Argument(help="Run or model folder")],
    host: Annotated[str, Opt(help="Interface; 0.0.0.0 exposes it to the network")] = "127.0.0.1",
    port: Annotated[int, Opt()] = 8000,
    index_path: Annotated[Path | None, Opt("--index", help="Index for /v1/search (retrieval)")] = None,
    max_upload_mb: Annotated[float, Opt(help="Largest request body")] = 10.0,
    max_batch: Annotated[int, Opt(help="Requests fused into one model call")] = 32,
    max_wait_ms: Annotated[float, Opt(help="How long a request waits for company")] = 5.0,
    timeout_s: Annotated[float, Opt(help="Answer within this or return 504")] = 30.0,
    api_key: Annotated[str | None, Opt(
        envvar="MMFUSE_API_KEY", show_envvar=True,
        help="Require 'Authorization: Bearer KEY' (better set in $MMFUSE_API_KEY: it stays "
             "out of process lists and shell history)")] = None,
    insecure: Annotated[bool, Opt(help="Serve a non-loopback --host without an API key")] = False,
) -> None:
    """HTTP API and web page (/), OpenAPI at /docs."""
    import ipaddress
    import logging

    import uvicorn

    from mmfuse import load
    from mmfuse.serving.app import create_app

    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        loopback = False
    if not loopback and not api_key and not insecure:
        raise ConfigError(f"--host {host} exposes the model to the network: set an API key "
                          "($MMFUSE_API_KEY or --api-key), or pass --insecure to serve "
                          "without one")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    api = create_app(load(run), max_upload_bytes=int(max_upload_mb * 2**20), max_batch=max_batch,
                     max_wait_ms=max_wait_ms, timeout_s=timeout_s, index=index_path,
                     api_key=api_key)
    out.print(f"serving {run} on http://{host}:{port}/ (API docs: /docs)")
    uvicorn.run(api, host=host, port=port, log_level="info")


@app.command()
@friendly
def export(
    run: Annotated[Path, typer.Argument(help="Run or model folder")],
    data: Annotated[Path, Opt(help="Manifest of real rows to check the export on (labels "
                                   "not needed)")],
    out_file: Annotated[Path, Opt("--out", help="Output file", callback=writable_file)] = Path("model.onnx"),
    export_format: Annotated[str, Opt("--format", help="onnx")] = "onnx",
    tolerance: Annotated[float, Opt(help="Largest allowed difference from `mmfuse predict`")] = 1e-4,
    max_rows: Annotated[int, Opt(help="Rows of --data checked")] = 32,
) -> None:
    """Export the whole model to ONNX; onnxruntime must match `mmfuse predict` on real rows."""
    from mmfuse import load
    from mmfuse.serving.export import export_onnx

    if export_format != "onnx":
        raise ConfigError(f"unknown export format '{export_format}'; supported: onnx")
    result = export_onnx(load(run), out_file, dataset_or_path(data), tolerance=tolerance,
                         max_rows=max_rows)
    out.print(f"exported to {out_file} ({result['size_mb']:.1f} MB); largest difference from "
              f"`mmfuse predict` {result['max_abs_difference']:.2e} on "
              f"{result['checked_rows']} rows; inputs: {', '.join(result['inputs'])}")
    for name, how in result["preparation"].items():
        out.print(f"  {name}.*: {how}")
    if result["default_predict_difference"] > tolerance:
        out.print(f"note: on this CPU `mmfuse predict` reads text in bfloat16 and differs from "
                  f"the float32 file by up to {result['default_predict_difference']:.1e}; "
                  "MMFUSE_FAST_PATH=0 predicts in float32, as the file computes")
