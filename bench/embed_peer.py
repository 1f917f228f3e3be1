"""The peer side of bench/embed.py: sentence-transformers on CPU torch, in its own virtualenv.

Run by bench/embed.py with the peer venv's python (the project's venv stays torch-free), never
by hand. Protocol: argv is ``MODEL_DIR WORKDIR``; WORKDIR/texts.json holds the texts. After
loading, one JSON line ``{"ready": ...}`` goes to stdout; then each stdin line
``NAME START END`` encodes texts[START:END], saves WORKDIR/NAME.npy and answers one JSON line
with the wall and CPU seconds of the encode call alone. An empty line or EOF ends it.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np


def main() -> int:
    model_dir, workdir = Path(sys.argv[1]), Path(sys.argv[2])
    try:
        import sentence_transformers  # type: ignore[import-not-found]
        import torch  # type: ignore[import-not-found]
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        print(json.dumps({"error": f"cannot import the peer stack: {exc}"}), flush=True)
        return 2
    texts = json.loads((workdir / "texts.json").read_text(encoding="utf-8"))
    # The defaults a user gets: CPU, batch 32, the model's own max_seq_length (256).
    model = SentenceTransformer(str(model_dir), device="cpu")
    model.encode(texts[:64], batch_size=32, show_progress_bar=False)  # warm-up
    print(
        json.dumps(
            {
                "ready": True,
                "torch": torch.__version__,
                "sentence_transformers": sentence_transformers.__version__,
                "threads": torch.get_num_threads(),
                "interop_threads": torch.get_num_interop_threads(),
                "max_seq_length": model.max_seq_length,
            }
        ),
        flush=True,
    )
    for line in sys.stdin:
        if not line.strip():
            break
        name, start, end = line.split()
        part = texts[int(start) : int(end)]
        t0, c0 = time.perf_counter(), time.process_time()
        vecs = model.encode(part, batch_size=32, normalize_embeddings=True, show_progress_bar=False)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        np.save(workdir / f"{name}.npy", np.asarray(vecs, dtype=np.float32))
        print(json.dumps({"name": name, "wall": wall, "cpu": cpu}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
