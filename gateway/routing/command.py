"""`tollgate router train`: labelled CSV/JSONL in, held-out curve printed, artifact written."""

from __future__ import annotations

import argparse
import sys

from gateway.routing.calibration import DEFAULT_TARGETS, cheapest_point, random_share
from gateway.routing.data import RouterDataError, load_labelled, read_excluded
from gateway.routing.features import KINDS, FeatureSpec
from gateway.routing.router import DEFAULT_L2, DEFAULT_LABEL, LABELS, train_router


def add_router_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    router = sub.add_parser("router", help="train the learned strong/weak model router (docs/routing.md)")
    actions = router.add_subparsers(dest="router_command", required=True)
    train = actions.add_parser("train", help="train from labelled prompts and write the router artifact")
    train.add_argument("--data", action="append", required=True, help="CSV or JSONL of labelled prompts (repeatable)")
    train.add_argument("--strong", required=True, help="the strong model's column (CSV) or scores key (JSONL)")
    train.add_argument("--weak", required=True, help="the weak model's column or key")
    train.add_argument("--out", required=True, help="directory to write the artifact to")
    train.add_argument("--folds", type=int, default=5, help="k for the held-out calibration (default 5)")
    train.add_argument("--exclude", action="append", default=[], help="JSONL of prompts to leave out (repeatable)")
    train.add_argument("--features", default="structure,static", help=f"comma list of {', '.join(KINDS)}")
    train.add_argument("--l2", type=float, default=DEFAULT_L2, help="L2 regularisation per example")
    train.add_argument(
        "--label", choices=sorted(LABELS), default=DEFAULT_LABEL,
        help="what the model learns: the strong model's expected gain (default) or 1 where it scores higher",
    )  # fmt: skip
    train.add_argument("--seed", type=int, default=0)
    train.set_defaults(func=run_train)


def _fail(message: str) -> int:
    print(f"tollgate: {message}", file=sys.stderr)
    return 2


def run_train(args: argparse.Namespace) -> int:
    try:
        spec = FeatureSpec(kinds=tuple(k.strip() for k in args.features.split(",") if k.strip()))
        excluded: set[str] = set()
        for path in args.exclude:
            excluded |= read_excluded(path)
        data = load_labelled(args.data, args.strong, args.weak, excluded)
    except (RouterDataError, ValueError, OSError) as err:
        return _fail(str(err))
    if args.folds < 2 or args.folds > len(data):
        return _fail(f"--folds must be between 2 and the number of labelled prompts ({len(data)}), got {args.folds}")
    if args.l2 < 0:
        return _fail(f"--l2 must be >= 0, got {args.l2}")
    try:
        router, report = train_router(
            data, args.strong, args.weak, spec, args.l2, args.folds, args.seed, label=args.label
        )
        out = router.save(args.out)
    except (ValueError, OSError, RuntimeError) as err:
        return _fail(str(err))
    summary = data.summary()
    strong_mean, weak_mean = summary["strong_mean_score"], summary["weak_mean_score"]
    print(
        f"{len(data)} prompts ({summary['excluded_rows']} excluded); mean score strong {strong_mean:.3f}, "
        f"weak {weak_mean:.3f}; strong needed on {summary['strong_needed_share']:.1%}"
    )
    print(
        f"features {'+'.join(spec.kinds)}, logistic regression on {args.label}, l2 {args.l2:g}; "
        f"{report.folds}-fold held-out curve:\n"
    )
    print("| target (share of strong quality) | threshold | strong calls | quality kept | random routing needs |")
    print("|---|---|---|---|---|")
    for target in DEFAULT_TARGETS:
        point = cheapest_point(report.curve, target)
        random_needs = random_share(target, strong_mean, weak_mean)
        print(
            f"| {target:.1%} | {point.threshold:.4f} | {point.strong_share:.1%} | {point.relative_quality:.1%} "
            f"| {random_needs:.1%} |"
        )
    print(f"\nwrote {out} ({report.seconds:.1f} s)")
    return 0
