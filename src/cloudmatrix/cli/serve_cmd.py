"""`cloudmatrix serve`: the OpenAI-compatible emulator's command. Registered on the app in app.py."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from cloudmatrix.cli.common import StackOption, _fail, _run, _stack_set

API_KEY_ENV = "CLOUDMATRIX_API_KEY"


def serve(
    scenario: Annotated[str | None, typer.Argument(help="Scenario YAML or built-in name (default cm384-paper).")] = (
        None
    ),
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    speed: Annotated[float, typer.Option(help="Simulated seconds per wall second (>1 runs faster).")] = 1.0,
    api_key: Annotated[
        str | None,
        typer.Option(
            help="Require 'Authorization: Bearer KEY' on every route but /health (default: $CLOUDMATRIX_API_KEY)."
        ),
    ] = None,
    public_metrics: Annotated[
        bool,
        typer.Option(
            "--public-metrics/--no-public-metrics", help="Answer /metrics without the key (for a Prometheus scraper)."
        ),
    ] = False,
    allowed_hosts: Annotated[
        list[str] | None,
        typer.Option(
            help="Host names requests may address besides localhost, 127.0.0.1, [::1] and --host "
            "(comma-separated or repeated; * for any)."
        ),
    ] = None,
    allowed_origins: Annotated[
        list[str] | None,
        typer.Option(
            help="Web origins (http://host:port) allowed to call the API from a browser (CORS); none by default."
        ),
    ] = None,
    drain_timeout: Annotated[
        float, typer.Option(help="On SIGTERM: seconds to let running streams finish before cutting them.")
    ] = 10.0,
    max_outstanding: Annotated[
        int | None, typer.Option(help="Requests in flight before 429 (default: the decode instances' sequence slots).")
    ] = None,
    max_body_bytes: Annotated[int, typer.Option(help="Largest accepted request body (413 above).")] = 4 * 1024 * 1024,
    tokenizer: Annotated[
        Path | None,
        typer.Option(help="A local Hugging Face tokenizer.json to count prompt tokens (default: 4 characters each)."),
    ] = None,
    served_model_name: Annotated[
        list[str] | None,
        typer.Option(
            help="A name requests may give the model, as vLLM's (repeat for several; /v1/models lists them). "
            "Default: the catalog id and its Hugging Face id."
        ),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="KEY=VALUE",
            help="Override a scenario field, KEY a dotted path (workload.output.mean=300); repeatable. "
            "`cloudmatrix catalog keys` lists every key.",
        ),
    ] = None,
    stack: StackOption = None,
    faults: Annotated[
        str | None,
        typer.Option(
            metavar="PATH",
            help="Inject these faults (a scenario's faults: section, docs/faults.md): a cut stream ends with an "
            "error event, new requests get 503 with Retry-After while the deployment recovers.",
        ),
    ] = None,
    max_header_bytes: Annotated[
        int, typer.Option(help="Largest request header: request line and fields (431 above).")
    ] = 16 * 1024,
    max_headers: Annotated[int, typer.Option(help="Most header fields in one request (431 above).")] = 100,
    header_timeout: Annotated[
        float, typer.Option(help="Seconds for a request's header to arrive from its first byte (408, closed).")
    ] = 10.0,
    body_timeout: Annotated[
        float, typer.Option(help="Seconds for a request's whole body to arrive after its header (closed).")
    ] = 30.0,
    keep_alive_timeout: Annotated[
        float, typer.Option(help="Seconds a connection may wait with no request in progress before it is closed.")
    ] = 5.0,
    max_connections: Annotated[
        int | None,
        typer.Option(
            help="Open connections; at the cap the oldest idle one is closed, else 503 "
            "(default: the descriptor limit less 64, at most 4,096)."
        ),
    ] = None,
) -> None:
    """OpenAI-compatible API that streams tokens at the pace the simulated deployment would."""
    from cloudmatrix.emulator.app import ServeConfig, create_app
    from cloudmatrix.emulator.connections import (
        DESCRIPTOR_MARGIN,
        ConnectionLimits,
        default_max_connections,
        descriptor_limit,
        max_connections_allowed,
    )
    from cloudmatrix.emulator.engine import RealtimeEngine
    from cloudmatrix.emulator.guard import check_api_key, parse_hosts, parse_origins
    from cloudmatrix.emulator.server import DrainingServer, check_listen, serve_config
    from cloudmatrix.emulator.tokenizer_worker import TokenizerPool
    from cloudmatrix.inputs import InputError, check_number, check_optional
    from cloudmatrix.sim.scenario import load_scenario

    try:
        check_number("--port", port, lo=1, hi=65535, integer=True)
        check_number("--speed", speed, lo=0, lo_open=True, hi=1e6)
        check_optional("--max-outstanding", max_outstanding, lo=1, hi=1_000_000, integer=True)
        check_number("--max-body-bytes", max_body_bytes, lo=1, hi=2**31, integer=True)
        check_number("--drain-timeout", drain_timeout, lo=0, hi=3600)
        # an empty key is refused, never taken for "no key": authentication fails closed
        from_env = os.environ.get(API_KEY_ENV)
        if api_key is not None:
            api_key = check_api_key(api_key, "--api-key", "leave the option out")
        elif from_env is not None:
            api_key = check_api_key(from_env, f"${API_KEY_ENV}", "unset it")
        hosts, origins = parse_hosts(allowed_hosts, host), parse_origins(allowed_origins)
        names = served_names(served_model_name)
        check_number("--max-header-bytes", max_header_bytes, lo=256, hi=16 * 1024 * 1024, integer=True)
        check_number("--max-headers", max_headers, lo=1, hi=10_000, integer=True)
        for flag, seconds in (
            ("--header-timeout", header_timeout),
            ("--body-timeout", body_timeout),
            ("--keep-alive-timeout", keep_alive_timeout),
        ):
            check_number(flag, seconds, lo=0, lo_open=True, hi=3600)
        check_optional("--max-connections", max_connections, lo=1, hi=1_000_000_000, integer=True)
        if max_connections is not None and max_connections > max_connections_allowed():
            raise InputError(
                f"--max-connections: got {max_connections}; expected at most {max_connections_allowed():,}: the "
                f"descriptor limit (ulimit -n: {descriptor_limit():,}) less {DESCRIPTOR_MARGIN} for its own files"
            )
    except InputError as e:
        _fail(str(e))

    def build() -> tuple[Any, str]:
        sc = load_scenario(scenario, _stack_set(stack, set_))
        if faults is not None:
            from cloudmatrix.sim.fault_spec import faults_from_file

            sc = sc.model_copy(update={"faults": faults_from_file(faults)})
        tokens = TokenizerPool(tokenizer) if tokenizer is not None else None
        engine = RealtimeEngine(sc, speed=speed, max_outstanding=max_outstanding, tokens=tokens)
        config = ServeConfig(
            model_id=sc.model,
            served_names=names or default_names(sc.model),
            api_key=api_key,
            allowed_hosts=hosts,
            allowed_origins=origins,
            public_metrics=public_metrics,
            max_body_bytes=max_body_bytes,
            seed=sc.seed,
        )
        return (create_app(engine, config), engine), f"{sc.model} as {', '.join(config.names)}"

    (api, engine), model_id = _run(build)
    _run(lambda: check_listen(host, port))  # uvicorn would log a bind failure and exit from inside its loop
    sys.stderr.write(
        f"serving {model_id} ({scenario or 'cm384-paper'}) on http://{host}:{port}/v1 at speed {speed}; "
        f"prompts counted at {engine.tokens.name}; "
        + (
            "no --api-key: every route is open to whoever can reach the address\n"
            if api_key is None
            else "every route but /health needs the key (the dashboard: open /dashboard?key=KEY once)\n"
        )
    )
    limits = ConnectionLimits(
        max_header_bytes=max_header_bytes,
        max_headers=max_headers,
        header_timeout_s=header_timeout,
        body_timeout_s=body_timeout,
        keep_alive_timeout_s=keep_alive_timeout,
        max_connections=max_connections or default_max_connections(),
    )
    try:
        DrainingServer(serve_config(api, host, port, drain_timeout, limits), engine, drain_timeout).run()
    except OSError as e:
        _fail(f"cannot listen on {host}:{port}: {e.strerror or e}")


MAX_NAME_CHARS = 256


def served_names(given: list[str] | None) -> tuple[str, ...]:
    """``--served-model-name`` values, each checked (printable, no spaces, bounded) and kept once, in order."""
    from cloudmatrix.inputs import InputError

    names: list[str] = []
    for name in given or []:
        if not name or len(name) > MAX_NAME_CHARS or not name.isprintable() or any(c.isspace() for c in name):
            raise InputError(
                f"--served-model-name: got {name[:64]!r}; expected 1 to {MAX_NAME_CHARS} printable characters "
                "without spaces"
            )
        if name not in names:
            names.append(name)
    return tuple(names)


def default_names(model: str) -> tuple[str, ...]:
    """The scenario's model id and, for a shipped model, its Hugging Face id."""
    from cloudmatrix.catalog.models import hf_id_of

    hf = hf_id_of(model)
    return (model,) if hf is None else (model, hf)
