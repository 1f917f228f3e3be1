"""An int8 copy of the embedding model for single queries (dynamic quantization, per channel).

Why: a query is a handful of tokens, and for so few rows the float matrix products of the
six layers are the whole cost (2.2-3.2 ms on one core here, the largest part of a hybrid
search). onnxruntime's dynamic quantization runs the same products in int8 (VNNI): a short
query then takes 1.0-1.3 ms. Documents keep the float model: they are embedded in batches,
where float is fast, and their stored vectors stay valid.

Quality, measured with ``papersift eval`` (documents float, queries int8, nDCG@10): semantic
CISI 0.431 (float queries 0.429), Cranfield 0.506 (0.508); query vectors have cosine 0.994
with the float ones. Per-tensor quantization was measured too and is not used: cosine 0.96,
semantic CISI 0.415. The attention products (activation times activation) stay float.

The quantized file is derived from the model file, so it is made once per model fingerprint
under ``$PAPERSIFT_CACHE/models`` (default ``~/.cache/papersift/models``), written to a
temporary name and renamed. ``PAPERSIFT_QUERY_INT8=0`` switches it off; any failure here
also just leaves queries on the float model.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from papersift.settings import current as current_settings

if TYPE_CHECKING:
    from onnx import ModelProto

log = logging.getLogger("papersift.search")


def enabled() -> bool:
    return current_settings().query_int8


def models_dir() -> Path:
    return current_settings().cache / "models"


def _fold_weight_dequantization(model: ModelProto) -> None:
    """Turn ``Mul(Cast(int8 initializer), scale initializer)`` pairs into float initializers.

    Some exports (the bundled model among them) store weights as int8 plus a scale and
    dequantize them in the graph; the quantizer must see float weights to quantize them.
    """
    import numpy as np
    from onnx import numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    casts = {n.output[0]: n for n in graph.node if n.op_type == "Cast" and n.input[0] in inits}
    folded: list = []
    used: set[str] = set()
    keep = []
    for node in graph.node:
        if node.op_type == "Mul" and node.input[0] in casts and node.input[1] in inits:
            cast = casts[node.input[0]]
            weight = numpy_helper.to_array(inits[cast.input[0]]).astype(np.float32)
            scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
            folded.append(numpy_helper.from_array(weight * scale, node.output[0]))
            used.update((cast.input[0], node.input[1]))
            continue
        keep.append(node)
    if not folded:
        return
    # Casts that only fed folded Muls are dead now, and so are their int8 initializers.
    consumed = {i for n in keep for i in n.input} | {o.name for o in graph.output}
    keep = [n for n in keep if not (n.output[0] in casts and n.output[0] not in consumed)]
    consumed = {i for n in keep for i in n.input}
    rest = [i for i in graph.initializer if i.name not in used or i.name in consumed]
    del graph.node[:]
    graph.node.extend(keep)
    del graph.initializer[:]
    graph.initializer.extend(rest + folded)


def int8_model(source: Path, fingerprint: str) -> Path | None:
    """Path of the int8 query model for ``source`` (made now if missing); None if it cannot be."""
    folder = models_dir()
    dest = folder / f"{fingerprint}-query-int8.onnx"
    if dest.is_file():
        return dest
    try:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

        folder.mkdir(parents=True, exist_ok=True)
        model = onnx.load(str(source))
        _fold_weight_dequantization(model)
        weights = {i.name for i in model.graph.initializer}
        attention = [
            n.name
            for n in model.graph.node
            if n.op_type == "MatMul" and not any(i in weights for i in n.input)
        ]
        with tempfile.TemporaryDirectory(dir=folder, prefix=".quantize-") as tmp:
            plain = Path(tmp) / "float.onnx"
            onnx.save(model, str(plain))
            out = Path(tmp) / "int8.onnx"
            logging.disable(logging.WARNING)  # its advice to pre-process goes to the root logger
            try:
                quantize_dynamic(
                    plain,
                    out,
                    weight_type=QuantType.QInt8,
                    per_channel=True,
                    nodes_to_exclude=attention,
                )
            finally:
                logging.disable(logging.NOTSET)
            os.replace(out, dest)
        return dest
    except Exception as exc:  # onnx missing, odd graph, full disk: queries stay float
        log.warning("int8 query model not available (%s); queries use the float model", exc)
        return None
