#!/usr/bin/env python3
"""Check every built Lambda function against Lambda's 250 MB unzipped limit (function + its layers).

Usage: package_check.py [BUILD_DIR]   (default .aws-sam/build, as written by `sam build`)

Reads BUILD_DIR/template.yaml, finds each AWS::Serverless::Function / AWS::Lambda::Function and the
layers it references (by Ref to a layer in the same template, including Globals.Function.Layers), sums
the unzipped size of the function's built directory and of each layer's built directory, prints a table
and exits 1 naming every function over the limit (2 on a usage or build-layout error).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

LIMIT_BYTES = 262_144_000  # 250 MiB: Lambda's limit on a function's unzipped code plus all its layers
MIB = 1024 * 1024

FUNCTION_TYPES = {"AWS::Serverless::Function": "CodeUri", "AWS::Lambda::Function": "Code"}
LAYER_TYPES = {"AWS::Serverless::LayerVersion": "ContentUri", "AWS::Lambda::LayerVersion": "Content"}


class BuildLayoutError(Exception):
    """The build directory or its template is not what `sam build` writes."""


def _construct_tag(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    """Turn a CloudFormation short tag (!Ref X, !GetAtt A.B, !Sub ...) into its long form."""
    name = "Ref" if tag_suffix == "Ref" else f"Fn::{tag_suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if tag_suffix == "GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    elif isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    else:
        raise yaml.constructor.ConstructorError(None, None, f"unexpected !{tag_suffix} node", node.start_mark)
    return {name: value}


# A SafeLoader subclass created at run time, so that registering the tag handler leaves
# yaml.SafeLoader itself untouched.
CfnLoader: type[yaml.SafeLoader] = type("CfnLoader", (yaml.SafeLoader,), {})
CfnLoader.add_multi_constructor("!", _construct_tag)


def load_template(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as stream:
        document = yaml.load(stream, Loader=CfnLoader)  # noqa: S506 - CfnLoader is a SafeLoader
    if not isinstance(document, dict) or not isinstance(document.get("Resources"), dict):
        raise BuildLayoutError(f"{path}: not a CloudFormation template (no Resources mapping)")
    return document


def tree_size(path: Path) -> int:
    """Bytes a directory (or file) occupies once unzipped: the sum of its regular files' sizes."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            file_path = Path(root, name)
            try:
                total += file_path.stat().st_size  # follows symlinks, as zipping does
            except FileNotFoundError:  # dangling symlink: nothing would be packaged
                continue
    return total


@dataclass
class Artifact:
    logical_id: str
    path: Path | None  # None: not a local build artifact (S3 location, image, external ARN)
    size: int = 0


@dataclass
class FunctionReport:
    logical_id: str
    own: Artifact
    layers: list[Artifact] = field(default_factory=list)
    unmeasured_layers: list[str] = field(default_factory=list)

    @property
    def layers_size(self) -> int:
        return sum(layer.size for layer in self.layers)

    @property
    def total(self) -> int:
        return self.own.size + self.layers_size


def _artifact_path(build_dir: Path, logical_id: str, location: Any) -> Path | None:
    """Where `sam build` put a function's or layer's code: its CodeUri/ContentUri, else its logical id."""
    candidates: list[Path] = []
    if isinstance(location, str) and not location.startswith("s3://"):
        candidates.append(Path(location) if Path(location).is_absolute() else build_dir / location)
    candidates.append(build_dir / logical_id)
    for candidate in candidates:
        if candidate.exists():
            return candidate
    return None


def _layer_refs(layers: Any) -> tuple[list[str], list[str]]:
    """Split a Layers list into Refs to template resources and anything else (ARNs, intrinsics)."""
    refs: list[str] = []
    others: list[str] = []
    if not isinstance(layers, list):
        return refs, others
    for item in layers:
        if isinstance(item, dict) and set(item) == {"Ref"} and isinstance(item["Ref"], str):
            refs.append(item["Ref"])
        else:
            others.append(str(item))
    return refs, others


def collect(build_dir: Path) -> list[FunctionReport]:
    template = load_template(build_dir / "template.yaml")
    resources: dict[str, Any] = template["Resources"]
    globals_function = (template.get("Globals") or {}).get("Function") or {}
    global_layers = globals_function.get("Layers", [])

    layer_sizes: dict[str, Artifact] = {}
    for logical_id, resource in resources.items():
        if not isinstance(resource, dict) or resource.get("Type") not in LAYER_TYPES:
            continue
        properties = resource.get("Properties") or {}
        path = _artifact_path(build_dir, logical_id, properties.get(LAYER_TYPES[resource["Type"]]))
        layer_sizes[logical_id] = Artifact(logical_id, path, tree_size(path) if path else 0)

    reports: list[FunctionReport] = []
    for logical_id, resource in resources.items():
        if not isinstance(resource, dict) or resource.get("Type") not in FUNCTION_TYPES:
            continue
        properties = resource.get("Properties") or {}
        if properties.get("PackageType") == "Image":
            continue  # container images have their own 10 GB limit
        path = _artifact_path(build_dir, logical_id, properties.get(FUNCTION_TYPES[resource["Type"]]))
        if path is None:
            raise BuildLayoutError(f"{logical_id}: no built code under {build_dir} (run `sam build` first)")
        report = FunctionReport(logical_id, Artifact(logical_id, path, tree_size(path)))
        layers = properties.get("Layers", [])
        if resource["Type"] == "AWS::Serverless::Function" and isinstance(global_layers, list):
            layers = [*global_layers, *(layers if isinstance(layers, list) else [])]
        refs, others = _layer_refs(layers)
        for ref in refs:
            layer = layer_sizes.get(ref)
            if layer is None or layer.path is None:
                report.unmeasured_layers.append(ref)
            else:
                report.layers.append(layer)
        report.unmeasured_layers.extend(others)
        reports.append(report)
    return reports


def _mib(size: int) -> str:
    return f"{size / MIB:.1f}"


def _percent(size: int) -> str:
    return f"{100 * size / LIMIT_BYTES:.1f}%"


def render(reports: list[FunctionReport]) -> str:
    header = ("function", "own MB", "layers MB", "total MB", "% of limit")
    rows = [
        (
            report.logical_id,
            _mib(report.own.size),
            _mib(report.layers_size),
            _mib(report.total),
            _percent(report.total),
        )
        for report in reports
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest])

    out = [line(header), "  ".join("-" * w for w in widths)]
    out.extend(line(row) for row in rows)
    for report in reports:
        details = ", ".join(f"{layer.logical_id} {_mib(layer.size)}" for layer in report.layers) or "none"
        out.append(f"  {report.logical_id} layers: {details}")
        if report.unmeasured_layers:
            out.append(f"  {report.logical_id} layers not measured: {', '.join(report.unmeasured_layers)}")
    out.append(f"limit: {LIMIT_BYTES:,} bytes ({_mib(LIMIT_BYTES)} MB) unzipped per function with its layers")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("build_dir", nargs="?", default=".aws-sam/build", type=Path)
    args = parser.parse_args(argv)
    build_dir: Path = args.build_dir

    if not (build_dir / "template.yaml").is_file():
        print(f"package_check: {build_dir}/template.yaml not found (run `sam build` first)", file=sys.stderr)
        return 2
    try:
        reports = collect(build_dir)
    except (BuildLayoutError, yaml.YAMLError) as exc:
        print(f"package_check: {exc}", file=sys.stderr)
        return 2
    if not reports:
        print(f"package_check: no zip-packaged functions in {build_dir}/template.yaml", file=sys.stderr)
        return 2

    print(render(reports))
    over = [r for r in reports if r.total > LIMIT_BYTES]
    for report in over:
        print(
            f"FAIL: {report.logical_id} is {report.total:,} bytes unzipped with its layers, "
            f"over Lambda's {LIMIT_BYTES:,}-byte limit by {report.total - LIMIT_BYTES:,}",
            file=sys.stderr,
        )
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
