"""`mobilenet models`, `mobilenet cost` and `mobilenet compare`: what a model costs before training it."""

from __future__ import annotations

import argparse
import json

from mobilenet.cli.tables import format_table, millions
from mobilenet.errors import MobilenetError
from mobilenet.models.registry import list_models
from mobilenet.profiling.cost import CostReport, cost_of


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    models = subparsers.add_parser("models", help="list every released variant with parameters and mult-adds")
    models.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'mobilenet_v3*'")
    _add_output_flags(models)
    models.set_defaults(func=run_models)

    cost = subparsers.add_parser("cost", help="parameters and mult-adds of one model, per layer type or layer")
    cost.add_argument("name", help="model name, e.g. mobilenet_v1_0.75_192")
    cost.add_argument("--resolution", type=int, help="input size (overrides the name's)")
    cost.add_argument("--num-classes", type=int, default=1000)
    cost.add_argument("--per-layer", action="store_true", help="one row per conv/linear layer")
    _add_output_flags(cost)
    cost.set_defaults(func=run_cost)

    compare = subparsers.add_parser("compare", help="several models side by side")
    compare.add_argument("names", nargs="+", metavar="NAME")
    compare.add_argument("--resolution", type=int, help="input size for every model")
    _add_output_flags(compare)
    compare.set_defaults(func=run_compare)


def _add_output_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--json", action="store_true", help="machine-readable output")
    group.add_argument("--markdown", action="store_true", help="a markdown table")


def run_models(args: argparse.Namespace) -> int:
    names = list_models(args.pattern)
    if not names:
        raise MobilenetError(f"no model matches {args.pattern!r}; `mobilenet models` lists them all")
    reports = [cost_of(name) for name in names]
    if args.json:
        print(json.dumps([r.to_dict(per_layer=False) for r in reports], indent=2))
        return 0
    rows = [(r.model, r.resolution, f"{r.params:,}", millions(r.mult_adds)) for r in reports]
    print(format_table(("model", "resolution", "params", "mult-adds (M)"), rows, markdown=args.markdown))
    return 0


def run_cost(args: argparse.Namespace) -> int:
    report = cost_of(args.name, resolution=args.resolution, num_classes=args.num_classes)
    if args.json:
        print(json.dumps(report.to_dict(per_layer=args.per_layer), indent=2))
        return 0
    print(f"{report.model}: {report.params:,} parameters, {report.mult_adds:,} mult-adds "
          f"({millions(report.mult_adds)} M) at {report.resolution}x{report.resolution}")
    print()
    if args.per_layer:
        print(_per_layer_table(report, args.markdown))
        print()
    rows = [
        (s.layer_type.value, f"{s.mult_adds:,}", f"{s.mult_adds_pct:.2f}%", f"{s.params:,}", f"{s.params_pct:.2f}%")
        for s in report.breakdown()
    ]
    print(format_table(("layer type", "mult-adds", "share", "params", "share"), rows, markdown=args.markdown))
    return 0


def _per_layer_table(report: CostReport, markdown: bool) -> str:
    rows = [
        (
            layer.name,
            layer.layer_type.value,
            "x".join(map(str, layer.input_shape)),
            "x".join(map(str, layer.output_shape)),
            f"{layer.params:,}",
            f"{layer.mult_adds:,}",
        )
        for layer in report.layers
    ]
    return format_table(("layer", "type", "input", "output", "params", "mult-adds"), rows, markdown=markdown)


def run_compare(args: argparse.Namespace) -> int:
    reports = [cost_of(name, resolution=args.resolution) for name in args.names]
    if args.json:
        print(json.dumps([r.to_dict(per_layer=False) for r in reports], indent=2))
        return 0
    base = reports[0]
    rows = [
        (
            r.model,
            r.resolution,
            f"{r.params:,}",
            millions(r.mult_adds),
            f"{r.params / base.params:.2f}x",
            f"{r.mult_adds / base.mult_adds:.2f}x",
        )
        for r in reports
    ]
    headers = ("model", "resolution", "params", "mult-adds (M)", "params vs first", "mult-adds vs first")
    print(format_table(headers, rows, markdown=args.markdown))
    return 0
