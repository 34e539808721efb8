"""`python -m edgecnn.runner BUNDLE [--data DIR] [--limit N] [--runs N] [--warmup N] [--threads N]
[--save-predictions FILE]`

Prints one JSON object (see edgecnn.runner.run.run_bundle) on stdout. Anything
the user can fix reads `Error: ...` on stderr with exit 1, no traceback; Ctrl-C and
SIGTERM end with `Error: interrupted` (130) / `Error: terminated` (143). argparse,
not click: on the board this needs nothing beyond numpy and one runtime.
"""

from __future__ import annotations

import argparse
import json
import sys


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {value}")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m edgecnn.runner",
                                description="Run an edgecnn bundle here: latency, memory and accuracy as JSON.")
    p.add_argument("bundle", help="bundle folder (from `edgecnn compile`) or its manifest.json")
    p.add_argument("--data", help="data set to score: class folders, COCO JSON, Pascal VOC or YOLO txt; or a folder "
                   "of images without labels (timed, not scored)")
    p.add_argument("--limit", type=_positive, help="score only the first N images of --data")
    p.add_argument("--runs", type=_positive, default=50, help="timed invokes (default 50)")
    p.add_argument("--warmup", type=_positive, default=5, help="untimed invokes first (default 5)")
    p.add_argument("--threads", type=_positive, help="runtime threads (default: the manifest's, else every core)")
    p.add_argument("--save-predictions", metavar="FILE",
                   help="write the predictions on --data as JSON: COCO results (the data set's own image and "
                        "category ids) for detectors, top-5 class indices for classifiers")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)  # usage errors: argparse's message and exit 2
    try:
        import numpy  # noqa: F401
    except ImportError:
        print("Error: the runner needs numpy: pip install 'edgecnn[runner]'", file=sys.stderr)
        return 1
    from edgecnn.errors import DataError, EdgecnnError, one_line
    from edgecnn.logfilter import native_logs
    from edgecnn.paths import Terminated, process_scope
    from edgecnn.runner.amx import apply_policy
    from edgecnn.runner.run import run_bundle

    try:
        if args.save_predictions is not None:
            from edgecnn.paths import check_output

            if args.data is None:
                raise DataError("--save-predictions needs --data: predictions are made on a data set's images")
            check_output(args.save_predictions, "file", "--save-predictions")  # before the run, not after
        # SIGTERM (a timeout on the board) unwinds like Ctrl-C; LiteRT's delegate banner is dropped from stderr
        with process_scope(sweep=False), native_logs():
            apply_policy()  # EDGECNN_AMX=off: before any runtime loads (edgecnn.runner.amx)
            result = run_bundle(args.bundle, data=args.data, limit=args.limit, runs=args.runs,
                                warmup=args.warmup, threads=args.threads)
            if args.save_predictions is not None:
                from edgecnn.runner.metrics import save_coco_results

                save_coco_results(args.save_predictions, result.get("predictions") or [])
    except EdgecnnError as e:
        print(f"Error: {one_line(e)}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt as e:
        terminated = isinstance(e, Terminated)
        print("Error: terminated" if terminated else "Error: interrupted", file=sys.stderr)
        return 143 if terminated else 130
    json.dump(result, sys.stdout, allow_nan=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
