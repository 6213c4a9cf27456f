"""Export a checkpoint's ONNX graph into the runtime cache, in a process of its own.

    python -m derain_ros.runtime.export_child CHECKPOINT CACHE_DIR KEY_JSON

Run by :class:`derain_ros.runtime.cache.CheckpointExport` so that the process that asked
(a running node) never imports torch (see :mod:`derain_ros.runtime.cache`). The
checkpoint is loaded strictly (hash, tensor names and shapes); its description must give
the very key the parent asked for (same configuration, weights, size, opset, export
format), else nothing is written. Exit status 0: the entry exists; 2: refused, with the
reason on stderr.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point (see the module docstring)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 3:
        print("usage: python -m derain_ros.runtime.export_child CHECKPOINT CACHE_DIR KEY_JSON",
              file=sys.stderr)
        return 2
    from derain_ros.errors import DerainError
    from derain_ros.runtime.cache import CacheKey, ensure_onnx, spec_from_checkpoint

    checkpoint, cache_dir, key_json = Path(args[0]), Path(args[1]), args[2]
    try:
        wanted = json.loads(key_json)
        spec, sha = spec_from_checkpoint(checkpoint)
        key = CacheKey(spec, sha, int(wanted["height"]), int(wanted["width"]),
                       int(wanted["opset"]))
        if key.as_dict() != wanted:
            print(f"export_child: {checkpoint} is not the network asked for "
                  f"(asked {wanted}, found {key.as_dict()})", file=sys.stderr)
            return 2
        import torch

        from derain_ros.model import load_checkpoint

        torch.set_num_threads(1)  # beside a running node: one core is enough to trace
        net = load_checkpoint(checkpoint).eval()
        ensure_onnx(cache_dir, key, lambda: net)
    except (DerainError, OSError, ValueError, KeyError, TypeError) as err:
        print(f"export_child: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
