"""sparkrec export: a trained run -> the next version of a model in a Triton model repository.

With --workflow, also the preprocess model and the ensemble that serve raw fields; with --push, loaded
on a running server (its version policy keeps the previous version serving). serving/export.py does
the writing; this stage reads the arguments, starts Spark where the workflow's vocabularies are read,
and pushes.
"""

from __future__ import annotations

from pathlib import Path

import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from rec_plugin.errors import CommandParser, InputError, run_command
from serving.export import TOP_K, export_run, require_live
from serving.repository import DEFAULT_NAME, FLAVOURS, QUEUE_DELAY_US, ensemble_model_name, versions
from serving.rollout import routing_file
from spark_jobs.session import build_session


def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(prog="sparkrec export", description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True, help="a `sparkrec train` run directory (a path or URI)")
    parser.add_argument("--repository", required=True, type=Path, help="the Triton model repository")
    parser.add_argument("--name", default=DEFAULT_NAME, help="model name in the repository")
    parser.add_argument(
        "--workflow", help="the fitted workflow: adds <name>_preprocess and the ensemble <name>"
    )
    parser.add_argument("--flavour", choices=FLAVOURS, default="python")
    parser.add_argument(
        "--top-k",
        type=int,
        default=TOP_K,
        help="a recommender's (multvae) items per request, fixed in the served config",
    )
    parser.add_argument(
        "--queue-delay-us",
        type=int,
        default=QUEUE_DELAY_US,
        help="how long Triton waits to group concurrent requests into one batch (throughput vs latency)",
    )
    parser.add_argument("--push", metavar="URL", help="a running server's HTTP address, e.g. 127.0.0.1:8000")
    parser.add_argument(
        "--profile", default="local", help="Spark profile (reads the workflow's vocabularies)"
    )
    args = parser.parse_args(argv)
    if args.push:
        routed = routing_file(args.repository, args.name)
        if routed.exists():  # a push would load `latest 2` over the rollout's pinned versions
            raise InputError(
                f"{args.name} is served through a rollout ({routed}): export without --push, and roll "
                "the version out with `sparkrec retrain` (push, A/B, promote or roll back)"
            )
        require_live(args.push)
    spark = build_session(args.profile, "sparkrec-export") if args.workflow else None
    version = export_run(
        args.run_dir, args.repository, args.name, args.flavour, args.top_k, args.queue_delay_us,
        spark, args.workflow,
    )  # fmt: skip
    model_name = ensemble_model_name(args.name) if args.workflow else args.name
    if args.push:
        client = triton_http.InferenceServerClient(args.push)
        try:
            client.load_model(args.name)
        except InferenceServerException as error:
            raise InputError(f"{args.name} did not load on {args.push}: {error.message()}") from None
        loaded = versions(args.repository, model_name)
        ready = [str(v) for v in loaded if client.is_model_ready(model_name, str(v))]
        client.close()
        print(f"export: loaded on {args.push}; {model_name} versions ready: {', '.join(ready)}")
    return version


if __name__ == "__main__":
    run_command(main, "sparkrec export")
