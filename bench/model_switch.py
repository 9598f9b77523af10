"""Model switch: from a request for an unloaded model to its first token, vs llama-server.

Both servers get the same models folder holding two names of the default model (hard
links ``alpha.gguf`` and ``beta.gguf``) and keep one of them loaded (llama-server's router
mode ``--models-dir --models-max 1``; cria-server ``--max-loaded-models 2``, since its
``--model`` default model, a third name outside the folder, stays loaded), so every request
that names the other model unloads one and loads the other. Each round asks
alpha, then beta, ``--rounds`` times; printed: the median time to the first streamed token
of a switching request, and of a request to the model already loaded.

    python bench/model_switch.py --llama-server /path/to/llama-server
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

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server_compare import REPO_ROOT, Server, amx_safe_args, free_port, stop, wait_ready


def start(kind: str, folder: Path, args: argparse.Namespace) -> Server:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    if kind == "cria":
        default = folder.parent / "gamma.gguf"
        cmd = [sys.executable, "-m", "app", "serve", "--model", str(default), "--port", str(port)]
        cmd += ["--models-dir", str(folder), "--max-loaded-models", "2", "--parallel", "2"]
        cmd += ["--ctx-size", str(args.ctx), "--log-level", "warning"]
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL)
    else:
        cmd = [args.llama_server, "--models-dir", str(folder), "--models-max", "1"]
        cmd += ["--port", str(port), "--host", "127.0.0.1", "-np", "2", "-c", str(args.ctx * 2)]
        cmd += ["--no-webui", *amx_safe_args()]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_ready(url, proc)
    return Server(kind, url, proc)


async def first_token(client: httpx.AsyncClient, url: str, model: str) -> float:
    start = time.perf_counter()
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 4,
        "temperature": 0,
        "stream": True,
    }
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        elapsed = 0.0
        async for line in response.aiter_lines():
            if not elapsed and '"content":"' in line and '"content":""' not in line:
                elapsed = time.perf_counter() - start
    return elapsed or time.perf_counter() - start


async def rounds(server: Server, names: list[str], n: int) -> tuple[list[float], list[float]]:
    switch: list[float] = []
    warm: list[float] = []
    # A fresh connection per request: llama-server's router drops kept-alive connections
    # across a switch.
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        await first_token(client, server.url, names[-1])  # warm-up: the last name is loaded
        for _ in range(n):
            for name in names:
                switch.append(await first_token(client, server.url, name))
                warm.append(await first_token(client, server.url, name))
    return switch, warm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--llama-server", default=os.environ.get("LLAMA_SERVER", ""))
    parser.add_argument(
        "--model", default=str(REPO_ROOT / "models/SmolLM2-135M-Instruct.Q4_1.gguf")
    )
    parser.add_argument("--ctx", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    kinds = ["cria"] + (["llama-server"] if args.llama_server else [])
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "models"
        folder.mkdir()
        os.link(args.model, Path(tmp) / "gamma.gguf")
        for name in ("alpha", "beta"):
            os.link(args.model, folder / f"{name}.gguf")
        for kind in kinds:
            server = start(kind, folder, args)
            try:
                # llama-server's router names models by file stem, as cria-server does.
                switch, warm = asyncio.run(rounds(server, ["beta", "alpha"], args.rounds))
            finally:
                stop(server)
            print(
                f"{kind:13} switch to first token: median {statistics.median(switch):6.2f} s "
                f"(min {min(switch):.2f}, max {max(switch):.2f});   model already loaded: "
                f"median {statistics.median(warm):6.3f} s",
                flush=True,
            )


if __name__ == "__main__":
    main()
