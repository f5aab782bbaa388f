"""DcGather through the delegate on ids outside [0, vocab): the invoke fails with a message naming the id and
the range, negative ids included, as stock TFLite's GATHER fails ("gather index out of bounds")."""
from __future__ import annotations

import numpy as np
import pytest

from crafted_models import gather_options, single_op_model
from dc_keras import codec, delegate

VOCAB, DIM = 24, 5


def _table() -> np.ndarray:
    rng = np.random.default_rng(3)
    table = rng.choice(np.array([-0.5, 0.25, 1.0], np.float32), size=(VOCAB, DIM))
    table[rng.random(table.shape) < 0.4] = 0.0
    return table


def _interpreter(index_type: str, mode: str):
    from ai_edge_litert.interpreter import Interpreter
    from tensorflow.lite.python import schema_py_generated as schema

    tensor_type = schema.TensorType.INT32 if index_type == "int32" else schema.TensorType.INT64
    data = single_op_model("DcGather", gather_options(VOCAB, DIM), [2], tensor_type,
                           codec.encode(_table(), bits=2), [2, DIM])
    interpreter = Interpreter(model_content=data, experimental_delegates=[delegate.load(mode=mode)])
    interpreter.allocate_tensors()
    return interpreter


def _gather(interpreter, ids, index_type):
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], np.asarray(ids, index_type))
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


@pytest.mark.parametrize("mode", ["sparse", "dense"])
@pytest.mark.parametrize("index_type", ["int32", "int64"])
def test_out_of_range_ids_fail_the_invoke(index_type, mode):
    interpreter = _interpreter(index_type, mode)
    np.testing.assert_array_equal(_gather(interpreter, [0, VOCAB - 1], index_type), _table()[[0, VOCAB - 1]])
    for bad in (-1, -VOCAB, VOCAB, 10 ** 6):
        with pytest.raises(RuntimeError, match=rf"dc delegate: DcGather \(node 0, weights 'layer/dc_blob'\): "
                                               rf"id {bad} at flat position 1 is out of range \[0, {VOCAB}\)"):
            _gather(interpreter, [3, bad], index_type)
    # A failed invoke leaves the interpreter usable.
    np.testing.assert_array_equal(_gather(interpreter, [5, 2], index_type), _table()[[5, 2]])
