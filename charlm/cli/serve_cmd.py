"""`charlm serve`: checkpoints loaded once behind an HTTP API that OpenAI clients speak, with a page at /."""

from __future__ import annotations

import ipaddress
import os
from typing import Any

import click
import torch

from charlm.cli.common import DEVICE_HELP, domain_errors, option_table
from charlm.cli.terminal import note, warn

_CAP = dict(type=click.IntRange(min=1), show_default=True)
# fmt: off
CAP_OPTIONS: list[tuple[str, dict[str, Any]]] = [
    ("--max-tokens", dict(_CAP, default=4096, help="Most new tokens one choice may ask for.")),
    ("--max-choices", dict(_CAP, default=16, help="Most choices one request may ask for (n x prompts).")),
    ("--max-prompt-chars", dict(_CAP, default=16384, help="Longest prompt, in characters.")),
    ("--max-body-bytes", dict(_CAP, default=1 << 20, help="Largest request body.")),
    ("--max-rows", dict(_CAP, default=64, help="Rows decoded together per model (the running batch).")),
    ("--max-queue", dict(_CAP, default=256, help="Requests waiting for rows per model; past it: 429.")),
]
# fmt: on


@click.command("serve")
@click.argument("checkpoints", nargs=-1, required=True, metavar="CKPT [CKPT...]")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every one).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port (0: a free one).")
@click.option(
    "--api-key",
    envvar="CHARLM_API_KEY",
    help="Require 'Authorization: Bearer KEY' on every API route (also $CHARLM_API_KEY).",
)
@option_table(CAP_OPTIONS)
@click.option("--which", type=click.Choice(["best", "last"]), default="best", show_default=True, help="Which weights.")
@click.option("--device", default="auto", show_default=True, help=DEVICE_HELP)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    help="CPU threads for the model's steps [default: one fewer than the cores, at least 1: the HTTP side keeps one].",
)
@click.option("--quiet", "-q", is_flag=True, help="No access log.")
@domain_errors
def serve_command(
    checkpoints: tuple[str, ...],
    host: str,
    port: int,
    api_key: str | None,
    which: str,
    device: str,
    threads: int | None,
    quiet: bool,
    **caps: int,
) -> None:
    """Serve CKPT (one or more checkpoint directories, or NAME=CKPT) over HTTP until Ctrl-C.

    \b
    POST /v1/completions  OpenAI's completions API (stream, n, stop, seed, logprobs, ...)
    GET  /v1/models       the models by name; GET /health; GET / a page to try them
      charlm serve checkpoints/tinyshakespeare
      charlm serve shakes=checkpoints/tinyshakespeare war=checkpoints/war --port 8080 --api-key s3cret
    """
    import charlm.serve as serving

    serving.require_extra()
    limits = serving.Caps(**caps)
    torch.set_num_threads(threads or max(1, (os.cpu_count() or 1) - 1))
    models = serving.load_models(list(checkpoints), device=device, which=which)
    for name, lm in models.items():
        note(f"model {name}: {lm.kind} {lm.level} model from {lm.path} on {lm.device}")
    note(f"{torch.get_num_threads()} CPU thread{'s' if torch.get_num_threads() != 1 else ''} for the model's steps")
    note(limits.describe())
    if not api_key and not _loopback(host):
        warn(f"listening on {host} without --api-key: anyone who can reach this machine can use the models")

    def ready(url: str) -> None:
        note(f"serving at {url} (page at /, API at {url}/v1){'; an API key is required' if api_key else ''}")

    serving.run(models, host, port, api_key=api_key, caps=limits, quiet=quiet, ready=ready)
    note("stopped")


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
