"""``python -m curation_pipeline.demo --out data/raw``: write the demo shards."""

from __future__ import annotations

import argparse
import os

from curation_pipeline.demo import __doc__ as about
from curation_pipeline.demo.writer import generate_sample_shards


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=about.splitlines()[0])
    from curation_pipeline.storage.warehouse import WAREHOUSE_DEFAULTS

    env, default = WAREHOUSE_DEFAULTS["raw_root"]  # where `curate run --raw` reads by default
    parser.add_argument("--out", default=os.environ.get(env) or default, help="directory for the .tar shards")
    parser.add_argument("--shards", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for path in generate_sample_shards(args.out, args.shards, args.seed):
        print(f"{path}  {path.stat().st_size:>9,d} bytes")


if __name__ == "__main__":
    main()
