"""`python -m aistack.vectors.optimize SHARD_DIR`: build a shard copy's index, then exit.

The embedded engine runs this on a flushed copy of a collection's shard, because
qdrant-edge-py keeps the GIL while it optimizes (seconds to minutes): in a process of
its own, the gateway's event loop never waits for it. See embedded/background.py.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m aistack.vectors.optimize SHARD_DIR", file=sys.stderr)
        return 2
    import qdrant_edge

    shard = qdrant_edge.EdgeShard.load(argv[0])
    try:
        shard.optimize()
        shard.flush()
    finally:
        shard.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
