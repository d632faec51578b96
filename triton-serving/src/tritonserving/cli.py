"""``triton-serving <subcommand>``: one entry point for every step of the folder.

Subcommands live in a registry so that each module owns its own arguments and the CLI stays fast:
the module is imported only when its subcommand runs (torch/onnxruntime imports take seconds).
To add one, append a line to ``SUBCOMMANDS``: ``name: ("module", "one-line help")``; the module
provides ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: name -> (module under tritonserving, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "export": ("export", "export the model to ONNX fp32 (pooled, L2-normalised sentence_embedding)"),
    "precision": ("precision", "build the reduced-precision forms: fp16, int8, int8 Q/DQ, OpenVINO IR"),
    "plans": ("trt_plans", "build TensorRT plans with trtexec (needs an NVIDIA GPU)"),
    "repo": ("repository", "generate the GPU and CPU Triton model repositories"),
    "drift": ("drift", "offline drift report: forms x forms embedding differences, cosine, top-10"),
    "serve": ("native_server", "run the real Triton (native, CPU) on the CPU repository in the foreground"),
    "perf": ("perf", "perf_analyzer on every served form + in-process ONNX Runtime: CSV, table, plot"),
}


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with one sub-parser per registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="triton-serving",
        description="Export all-MiniLM-L6-v2 to ONNX/fp16/int8/TensorRT, build Triton model repositories, "
        "serve them. Outputs go to ./build by default. The served forms are compared by `triton-compare`.",
    )
    sub = parser.add_subparsers(dest="command", metavar="<subcommand>")
    for name, (_module, help_text) in SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        sp.set_defaults(_module=_module)
        # arguments are added lazily in main() once we know which subcommand runs
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse, import the chosen module, let it add its arguments, run it."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in SUBCOMMANDS:
        if argv and argv[0] not in ("-h", "--help") and argv[0] not in SUBCOMMANDS:
            parser.error(f"unknown subcommand {argv[0]!r}; choose one of: {', '.join(SUBCOMMANDS)}")
        parser.print_help()
        return 0 if argv else 2
    name = argv[0]
    module_name, help_text = SUBCOMMANDS[name]
    module = importlib.import_module(f"tritonserving.{module_name}")
    sub = argparse.ArgumentParser(prog=f"triton-serving {name}", description=help_text)
    module.add_arguments(sub)
    args = sub.parse_args(argv[1:])
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
