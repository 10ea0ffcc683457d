"""The embedded engine: the real Qdrant engine in process, through qdrant-edge-py.

One edge shard per collection, under `vectors.path` (default: `vectors/` in the
gateway's data_dir): `collections/<name>/meta.json` (what it was created with, and
when last written) and `collections/<name>/shard/` (the engine's own files: segments
and write-ahead log). Aliases live in `aliases.json`.

Threads. qdrant-edge-py keeps the GIL for the whole of every call (measured: a
10k-point upsert holds it 0.6 s; building the HNSW index of 10k 384-d points, 16-20 s
on these machines), so a call on the event loop or on any thread of this process
stalls the gateway for as long as it runs. Hence:

- every engine call runs on this engine's one worker thread, never on the event loop
  thread, and large upserts go in slices so that no single hold is long;
- the index is built in another process: a flushed copy of the shard is optimized by
  `python -m aistack.vectors.optimize`, while this process keeps serving reads and
  writes on the original (writes are also kept in a replay list); then the optimized
  copy is swapped in and the writes made meanwhile are applied to it again;
- shards flush every `vectors.flush_interval` seconds when written, and at shutdown.

- engine.py: the worker thread, start and close, one operation's dispatch, sizes
- shards.py: the open collections, aliases and the store's lock (the state)
- catalog.py: collections, aliases, payload indexes
- points.py: point writes and reads
- background.py: flushing, and building an index in another process
- snapshots.py: snapshot files and restore
"""

from aistack.vectors.embedded.engine import EmbeddedEngine
from aistack.vectors.embedded.shards import dir_size

__all__ = ["EmbeddedEngine", "dir_size"]
