"""The `tollgate` command: serve, sim, check-config, teams, keys, policies, budgets, spend, demo, router."""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import orjson

from gateway.config import ConfigError, load_config


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.logs import configure_logging
    from gateway.server import create_app
    from gateway.telemetry import TelemetryError, check_env

    config = load_config(args.config)
    if config.telemetry.enabled:
        try:
            check_env()
        except TelemetryError as err:
            raise ConfigError(str(err)) from None
    server = config.server.model_copy(
        update={k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    )
    if not server.master_key:
        # Never run open by accident: a fresh master key, shown once, for this process only.
        server = server.model_copy(update={"master_key": "tg-master-" + secrets.token_urlsafe(24)})
        print(f"tollgate: no master key configured; generated one for this run: {server.master_key}", file=sys.stderr)
    config = config.model_copy(update={"server": server})
    configure_logging(config.server.log_level)
    uvicorn.run(
        create_app(config),
        host=server.host,
        port=server.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        # The gateway is the edge; X-Forwarded-* rewriting costs per request and is off.
        proxy_headers=False,
        log_config=None,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
    return 0


def _sim(args: argparse.Namespace) -> int:
    from gateway.config import SimConfig
    from gateway.logs import configure_logging
    from gateway.sim.server import serve

    configure_logging("warning")
    settings = SimConfig(
        ttft_ms=args.ttft_ms, tokens_per_s=args.tokens_per_s, latency_ms=args.latency_ms,
        fault=args.fault, fault_rate=args.fault_rate, batch_delay_s=args.batch_delay_s,
        batch_expire_s=args.batch_expire_s, batch_failure_rate=args.batch_failure_rate,
    )  # fmt: skip
    serve(args.host, args.port, settings)
    return 0


def _check_config(args: argparse.Namespace) -> int:
    config = load_config(args.file)
    print(f"{args.file}: ok ({len(config.models)} model aliases, store: {config.store.backend})")
    return 0


def _admin(args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    key = args.master_key or os.environ.get("TOLLGATE_MASTER_KEY")
    if not key:
        raise SystemExit("tollgate: the admin API needs the master key: --master-key or TOLLGATE_MASTER_KEY")
    request = urllib.request.Request(
        args.url.rstrip("/") + path,
        method=method,
        data=orjson.dumps(body) if body is not None else None,
        headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return orjson.loads(resp.read())
    except urllib.error.HTTPError as err:
        detail = orjson.loads(err.read()).get("error", {}).get("message", err.reason)
        raise SystemExit(f"tollgate: {err.code}: {detail}") from None
    except urllib.error.URLError as err:
        raise SystemExit(f"tollgate: cannot reach the gateway at {args.url}: {err.reason}") from None


def _teams(args: argparse.Namespace) -> int:
    if args.action == "create":
        result = _admin(args, "POST", "/admin/teams", {"id": args.team})
    elif args.action == "revoke":
        result = _admin(args, "DELETE", f"/admin/teams/{args.team}")
    else:
        result = _admin(args, "GET", "/admin/teams")
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    return 0


def _keys(args: argparse.Namespace) -> int:
    if args.action == "create":
        result = _admin(args, "POST", "/admin/keys", {"team": args.team, "name": args.name})
    elif args.action == "revoke":
        result = _admin(args, "DELETE", f"/admin/keys/{args.key_id}")
    else:
        result = _admin(args, "GET", "/admin/keys" + (f"?team={args.team}" if args.team else ""))
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    return 0


def _spend(args: argparse.Namespace) -> int:
    from gateway.accounting.spend import to_csv, to_table

    query = {"group_by": args.by, "start": args.start, "end": args.end, "team": args.team}
    path = "/v1/spend?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
    result = _admin(args, "GET", path)
    # The gateway sends JSON; CSV and the table are rendered here, by the same code as its CSV.
    if args.format == "json":
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    elif args.format == "csv":
        sys.stdout.write(to_csv(result["data"], result["group_by"]))
    else:
        sys.stdout.write(to_table(result["data"], result["group_by"]))
    return 0


def _policies(args: argparse.Namespace) -> int:
    if args.action != "list" and not args.team:
        raise SystemExit(f"tollgate: policies {args.action} needs --team")
    path = "/admin/policies" + ("" if args.action == "list" else "/" + urllib.parse.quote(args.team, safe=""))
    if args.action == "set":
        if not args.file:
            raise SystemExit("tollgate: policies set needs --file (a YAML or JSON team policy)")
        result = _admin(args, "PUT", path, _read_policy(args.file))
    elif args.action == "delete":
        result = _admin(args, "DELETE", path)
    else:
        result = _admin(args, "GET", path)
    if args.action == "get" and args.format == "yaml":
        # The document alone, ready to edit and `set` again; where it comes from as a comment.
        import yaml

        print(f"# policy of team {result['team']!r} (from: {result['source']})")
        sys.stdout.write(yaml.safe_dump(result["policy"], sort_keys=False))
        return 0
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    return 0


def _read_policy(file: str) -> dict[str, Any]:
    from policies.loading import PolicyError, read_policy_document

    what = "one team's policy (a mapping: budgets, rate_limits, ...)"
    try:
        data = read_policy_document(file, top_level=what)
    except PolicyError as err:
        raise SystemExit(f"tollgate: {err}") from None
    if not data:
        raise SystemExit(f"tollgate: {file} must hold {what}")
    return data


def _budgets(args: argparse.Namespace) -> int:
    from gateway.stages.policy_report import budgets_table

    query = "?" + urllib.parse.urlencode({"team": args.team}) if args.team else ""
    result = _admin(args, "GET", "/admin/budgets" + query)
    if args.format == "json":
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    else:
        sys.stdout.write(budgets_table(result))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from gateway.demo import run_demo

    return run_demo(requests=args.requests, seed=args.seed)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tollgate", description="An LLM gateway that cuts what every request costs.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help="YAML config file (default: simulated models + providers whose keys are set)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.set_defaults(func=_serve)

    sim = sub.add_parser("sim", help="run the simulated provider (OpenAI and Anthropic wire formats)")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=4010)
    sim.add_argument("--latency-ms", type=float, default=0.0)
    sim.add_argument("--ttft-ms", type=float, default=0.0)
    sim.add_argument("--tokens-per-s", type=float, default=0.0)
    sim.add_argument("--fault", help="inject this fault (429, 500, 503, 400, timeout, reset, malformed)")
    sim.add_argument("--fault-rate", type=float, default=0.0, help="share of requests that get --fault")
    sim.add_argument("--batch-delay-s", type=float, default=2.0, help="a batch ends this long after it is created")
    sim.add_argument("--batch-expire-s", type=float, help="a batch not ended this long after creation expires")
    sim.add_argument(
        "--batch-failure-rate", type=float, default=0.0, help="share of batch requests that fail (by custom_id)"
    )
    sim.set_defaults(func=_sim)

    check = sub.add_parser("check-config", help="validate a config file without starting anything")
    check.add_argument("file")
    check.set_defaults(func=_check_config)

    for name, func, actions in (("teams", _teams, ("create", "list", "revoke")), ("keys", _keys, ("create", "list", "revoke"))):
        admin = sub.add_parser(name, help=f"manage {name} through the admin API (master key)")
        admin.add_argument("action", choices=actions)
        admin.add_argument("--url", default=os.environ.get("TOLLGATE_URL", "http://127.0.0.1:4000"))
        admin.add_argument("--master-key")
        admin.add_argument("--team")
        if name == "keys":
            admin.add_argument("--name", default="")
            admin.add_argument("--key-id")
        admin.set_defaults(func=func)

    policies = sub.add_parser("policies", help="each team's budgets, rate limits and model rules (admin API)")
    policies.add_argument("action", choices=("list", "get", "set", "delete"))
    policies.add_argument("--team", help="the team (get, set, delete)")
    policies.add_argument("--file", help="set: the team's policy, YAML or JSON (docs/policies.md)")
    policies.add_argument(
        "--format", choices=("json", "yaml"), default="json", help="get: yaml prints the document alone"
    )
    policies.add_argument("--url", default=os.environ.get("TOLLGATE_URL", "http://127.0.0.1:4000"))
    policies.add_argument("--master-key")
    policies.set_defaults(func=_policies)

    budgets = sub.add_parser("budgets", help="spend and usage against each budget and rate limit (admin API)")
    budgets.add_argument("--team", help="only this team")
    budgets.add_argument("--format", choices=("table", "json"), default="table")
    budgets.add_argument("--url", default=os.environ.get("TOLLGATE_URL", "http://127.0.0.1:4000"))
    budgets.add_argument("--master-key")
    budgets.set_defaults(func=_budgets)

    spend = sub.add_parser("spend", help="what was spent and saved, grouped (admin API, master key)")
    spend.add_argument(
        "--by", default="team,model", help="comma list of team, model, served_model, stage, day, key, provider"
    )
    spend.add_argument("--start", help="unix seconds, ISO date or ISO datetime (UTC unless stated)")
    spend.add_argument("--end", help="exclusive; a bare date includes that whole day")
    spend.add_argument("--team", help="only this team's requests")
    spend.add_argument("--format", choices=("table", "csv", "json"), default="table")
    spend.add_argument("--url", default=os.environ.get("TOLLGATE_URL", "http://127.0.0.1:4000"))
    spend.add_argument("--master-key")
    spend.set_defaults(func=_spend)

    demo = sub.add_parser("demo", help="run the simulated provider and the gateway, drive a workload, print costs")
    demo.add_argument("--requests", type=int, default=120)
    demo.add_argument("--seed", type=int, default=11)
    demo.set_defaults(func=_demo)

    from gateway.routing.command import add_router_parser

    add_router_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
    except ConfigError as err:
        print(f"tollgate: invalid config:\n{err}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        code = 130
    raise SystemExit(code)


__all__ = ["build_parser", "main"]
