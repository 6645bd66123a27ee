"""``python -m benchmarks NAME [options]``: run one benchmark; without a name, list them."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from benchmarks import BENCHMARKS

USAGE = "usage: python -m benchmarks NAME [--smoke] [options]   (NAME --help lists its options)"


def listing() -> str:
    width = max(map(len, BENCHMARKS))
    lines = [USAGE, "", "benchmarks:"]
    lines += [f"  {name:<{width}}  {purpose}" for name, purpose in BENCHMARKS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(listing())
        return 0
    name, rest = args[0], args[1:]
    if name not in BENCHMARKS:
        print(f"no benchmark {name!r}\n\n{listing()}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"benchmarks.{name}")
    status: int = module.main(rest)
    return status


if __name__ == "__main__":
    sys.exit(main())
