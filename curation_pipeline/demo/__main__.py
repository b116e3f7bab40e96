"""``python -m curation_pipeline.demo --out data/raw``: write the demo shards."""

from __future__ import annotations

import argparse

from curation_pipeline.demo import __doc__ as about
from curation_pipeline.demo.writer import generate_sample_shards


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=about.splitlines()[0])
    parser.add_argument("--out", default="data/raw", help="directory for the .tar shards")
    parser.add_argument("--shards", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for path in generate_sample_shards(args.out, args.shards, args.seed):
        print(f"{path}  {path.stat().st_size:>9,d} bytes")


if __name__ == "__main__":
    main()
