"""Seconds to load a model (an ensemble loads its steps too) into a fresh tritonserver, as sparkrec
starts it (configs taken as written) against Triton's default (the python backend completing each
config first), interleaved round by round; prints the medians and the ratio.

A model repository to load from: `make demo` writes artifacts/demo/serving/repository.

    .venv/bin/python bench/model_load.py --repository artifacts/demo/serving/repository [--model ctr]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import tritonclient.http as triton_http
from harness import print_medians, report_quiet

from serving.server import WHOLE_CONFIGS, TritonServer


class AutoCompletingServer(TritonServer):
    """tritonserver with its default of completing every model's config."""

    def command(self) -> list[str]:
        return [flag for flag in super().command() if flag != WHOLE_CONFIGS]


def load_seconds(server_type: type[TritonServer], repository: Path, model: str) -> float:
    with server_type(repository) as server:
        client = triton_http.InferenceServerClient(server.http_url)
        started = time.perf_counter()
        client.load_model(model)
        seconds = time.perf_counter() - started
        client.close()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, required=True)
    parser.add_argument("--model", default="ctr")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if not (args.repository / args.model / "config.pbtxt").is_file():
        raise SystemExit(f"{args.repository} holds no model {args.model!r}: run make demo, or name one")
    variants = {"configs as written": TritonServer, "auto-completed": AutoCompletingServer}
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    report_quiet()
    for round_ in range(args.rounds):
        for name, server_type in sorted(variants.items(), reverse=round_ % 2 == 1):
            seconds[name].append(load_seconds(server_type, args.repository, args.model))
            print(f"round {round_ + 1} {name}: {seconds[name][-1]:.2f} s", flush=True)
    report_quiet()
    medians = print_medians(seconds, None, unit="s", digits=2)
    print(f"auto-completed / as written = {medians['auto-completed'] / medians['configs as written']:.2f}x")


if __name__ == "__main__":
    main()
