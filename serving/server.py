"""A real tritonserver process: the binary bundled in nvidia-pytriton (python backend, runs on CPU),
bound to 127.0.0.1, in explicit model-control mode; in production, the URL of an existing server.

Two facts measured here: the python backend's stub needs the running Python's `lib` directory on
LD_LIBRARY_PATH, and model code sees the venv only with the venv's `bin` first on PATH. PyTriton's
own front end is not used: it guards model control with a token and adds 2-4 ms per request.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import pytriton
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from rec_plugin.errors import CommandParser, InputError, run_command
from rec_plugin.machine_cache import cache_root

BUNDLED = Path(pytriton.__file__).resolve().parent / "tritonserver"
STUB = "triton_python_backend_stub"


def triton_home() -> Path:
    """The bundled server laid out as it expects (the stub for this Python inside backends/python),
    prepared once per machine under the cache. Each process stages its own copy and renames it into
    place, so processes preparing it at once (test workers, parallel jobs) never see a half copy."""
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    home = cache_root() / f"tritonserver-{version('nvidia-pytriton')}-py{python}"
    stub = home / "backends" / "python" / STUB
    if not stub.is_file():
        staging = home.with_name(f"{home.name}.tmp-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(BUNDLED, staging, ignore=shutil.ignore_patterns("python_backend_stubs"))
        shutil.copy2(BUNDLED / "python_backend_stubs" / python / STUB, staging / "backends" / "python" / STUB)
        if home.exists() and not stub.is_file():  # an interrupted copy of an older layout
            shutil.rmtree(home, ignore_errors=True)
        try:
            staging.rename(home)
        except OSError:  # another process put its copy in place first
            shutil.rmtree(staging, ignore_errors=True)
            if not stub.is_file():
                raise
    return home


def server_environment() -> dict[str, str]:
    """The environment the python backend needs: this Python's lib dir and pytriton's bundled libs on
    LD_LIBRARY_PATH, this interpreter's bin dir first on PATH. OpenMP workers in the stubs sleep
    when idle (unless the caller chose otherwise): spinning, the model's workers took the cores the
    next request's preprocessing and the server needed (b=2048 p99 39-47 ms against 17-23 ms)."""
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    libs = [sysconfig.get_config_var("LIBDIR"), str(BUNDLED.parent.parent / "nvidia_pytriton.libs")]
    env["LD_LIBRARY_PATH"] = os.pathsep.join([*libs, *filter(None, [env.get("LD_LIBRARY_PATH")])])
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# serving/repository.py writes every model's config.pbtxt whole. Left to complete configs, Triton's
# python backend starts one more stub process per model load just to ask model.py (torch imported
# and all) for its config (bench/model_load.py).
WHOLE_CONFIGS = "--disable-auto-complete-config"


@dataclass(frozen=True)
class Ports:
    http: int
    grpc: int
    metrics: int

    @classmethod
    def free(cls) -> Ports:
        return cls(free_port(), free_port(), free_port())


class TritonServer:
    """Starts tritonserver over a model repository and stops it with no processes left behind."""

    def __init__(self, repository: Path, ports: Ports | None = None, log: Path | None = None) -> None:
        self.repository, self.ports = Path(repository), ports or Ports.free()
        self.log = log or self.repository.parent / "tritonserver.log"
        self.process: subprocess.Popen | None = None

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.ports.http}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.ports.grpc}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.metrics}/metrics"

    def command(self) -> list[str]:
        home = triton_home()
        return [
            str(home / "bin" / "tritonserver"),
            f"--model-repository={self.repository}",
            "--model-control-mode=explicit",
            f"--backend-directory={home / 'backends'}",
            f"--cache-directory={home / 'caches'}",
            "--http-address=127.0.0.1",
            f"--http-port={self.ports.http}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={self.ports.grpc}",
            "--metrics-address=127.0.0.1",
            f"--metrics-port={self.ports.metrics}",
            "--exit-on-error=false",
            "--exit-timeout-secs=10",
            "--strict-readiness=false",
            WHOLE_CONFIGS,
        ]

    def start(self, timeout: float = 120.0) -> TritonServer:
        """Starts the server and waits until it answers ready (models load separately, explicitly)."""
        self.repository.mkdir(parents=True, exist_ok=True)  # models may be added after the start
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            # Its own session: stop() can signal the server and every backend stub it started.
            self.process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=server_environment(),
                start_new_session=True,
            )
        # A probe that hangs (a port another process listens on) is given up and tried again.
        client = triton_http.InferenceServerClient(self.http_url, connection_timeout=2.0, network_timeout=2.0)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise InputError(
                        f"tritonserver exited with {self.process.returncode} before it was live (a port "
                        f"in use? {self.ports}); see {self.log}"
                    )
                try:
                    if client.is_server_live():
                        return self
                except Exception:  # noqa: BLE001 - not listening yet
                    pass
                time.sleep(0.2)
            raise InputError(f"tritonserver was not live after {timeout:.0f} s; see {self.log}")
        except BaseException:  # Ctrl-C included: its own session would outlive this process
            self.stop()
            raise
        finally:
            client.close()  # an open connection would hold up the server's shutdown

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (Triton unloads its models and ends their stubs), SIGKILL to the group if it hangs;
        what is left of the group goes, the stubs of a server that died hard too."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        _reap_group(self.process.pid)
        return self.process.returncode

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def _reap_group(group: int) -> None:
    """Kills whatever is left of the server's process group (stubs of a server that died hard)."""
    try:
        os.killpg(group, signal.SIGKILL)
    except ProcessLookupError:
        pass


def main(argv: list[str] | None = None) -> None:
    """sparkrec serve: tritonserver over a model repository, serving until SIGTERM or Ctrl-C.

    Loads the named models at the start, and at the end shuts the server down with no processes left
    behind."""
    parser = CommandParser(prog="sparkrec serve", description=main.__doc__.splitlines()[0])
    parser.add_argument("--repository", required=True, type=Path, help="the Triton model repository")
    parser.add_argument("--load", nargs="*", default=[], help="models to load at start")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument(
        "--log-file",
        type=Path,
        help="tritonserver's log, appended to (default: tritonserver.log beside the repository folder)",
    )
    args = parser.parse_args(argv)
    absent = [name for name in args.load if not (args.repository / name).is_dir()]
    if absent:  # refused before the server starts (and makes the repository folder and its log)
        folders = args.repository.iterdir() if args.repository.is_dir() else []
        held = sorted(p.name for p in folders if p.is_dir())
        raise InputError(
            f"models {absent} are not in repository {args.repository} (it holds {held or 'none'}): "
            "export them first (sparkrec export) or fix --repository or --load"
        )
    if not args.repository.is_dir():  # a typo would otherwise serve nothing without a word
        print(
            f"serve: repository {args.repository} does not exist: it is made empty, for models exported "
            "into it with `sparkrec export --push`",
            flush=True,
        )
    ports = Ports(args.http_port, args.grpc_port, args.metrics_port)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    server = TritonServer(args.repository, ports, args.log_file).start()
    try:
        client = triton_http.InferenceServerClient(server.http_url)
        for name in args.load:
            try:
                client.load_model(name)
            except InferenceServerException as error:
                raise InputError(
                    f"model {name} did not load from {args.repository}: {error.message()}"
                ) from None
        client.close()
        print(
            f"serve: tritonserver ready; HTTP {server.http_url}, gRPC {server.grpc_url}, "
            f"metrics {server.metrics_url}; models loaded: {', '.join(args.load) or 'none'}; "
            f"log {server.log}",
            flush=True,
        )
        while not stopping and server.process.poll() is None:
            time.sleep(0.2)
        if not stopping:
            raise InputError(
                f"tritonserver exited with {server.process.returncode} while serving; see {server.log}"
            )
    except KeyboardInterrupt:
        pass
    finally:
        code = server.stop()
        print(f"serve: tritonserver stopped (exit code {code})", flush=True)


if __name__ == "__main__":
    run_command(main, "sparkrec serve")
