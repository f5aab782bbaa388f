"""Bad input to the TF ops: corrupt, truncated or wrong-version blobs and mismatched shapes must raise
tf.errors.InvalidArgumentError naming the problem, never crash the process."""
import numpy as np
import pytest
import tensorflow as tf

from dc_keras import codec
from dc_keras import ops


def _weights(shape=(24, 40), seed=0):
    rng = np.random.default_rng(seed)
    w = rng.choice(np.array([-1.5, -0.25, 0.5, 2.0], np.float32), size=shape)
    w[rng.random(shape) < 0.8] = 0
    return w


def _reference_accepts(blob: bytes) -> bool:
    try:
        codec.decode(blob)
    except codec.CodecError:
        return False
    return True


@pytest.mark.parametrize("coder", ["huffman", "rans", "raw"])
def test_truncated_blobs_raise(coder):
    blob = codec.encode(_weights(), bits=2, index_bits=4, coder=coder)
    for cut in sorted(set(range(0, 24)) | set(range(24, len(blob), max(1, len(blob) // 40)))):
        for run in (ops.decode, lambda b: ops.sparse_matmul(np.ones((1, 40), np.float32), b),
                    lambda b: ops.embedding_lookup([0], b)):
            with pytest.raises(tf.errors.InvalidArgumentError):
                run(blob[:cut])


@pytest.mark.parametrize("coder", ["huffman", "rans", "raw"])
def test_bit_flips_raise_or_match_the_reference(coder):
    """Every single-bit flip is rejected (the CRC and header checks) unless the reference decoder accepts
    the mutated blob too, in which case the ops must agree with it."""
    blob = codec.encode(_weights(seed=1), bits=2, index_bits=4, coder=coder)
    rng = np.random.default_rng(2)
    positions = sorted(set(range(min(len(blob), 24))) | set(rng.integers(0, len(blob), 40).tolist()))
    for pos in positions:
        for bit in (0, 3, 7):
            mutated = bytearray(blob)
            mutated[pos] ^= 1 << bit
            mutated = bytes(mutated)
            if _reference_accepts(mutated):
                np.testing.assert_array_equal(ops.decode(mutated).numpy(), codec.decode(mutated))
                continue
            with pytest.raises(tf.errors.InvalidArgumentError):
                ops.decode(mutated)
            with pytest.raises(tf.errors.InvalidArgumentError):
                ops.sparse_matmul(np.ones((1, 40), np.float32), mutated)


def test_body_corruption_with_fixed_crc_is_rejected_by_stream_checks():
    """Corrupt the coded streams but recompute the CRC, so only the decoder's own checks can catch it."""
    blob = codec.encode(_weights(seed=3), bits=2, index_bits=4, coder="huffman")
    info = codec.parse_info(blob)
    streams = info.delta_stream_bytes + info.code_stream_bytes  # the streams end the blob (FORMAT.md)
    rng = np.random.default_rng(4)
    rejected = 0
    for _ in range(60):
        mutated = bytearray(blob)
        pos = int(rng.integers(len(blob) - streams, len(blob)))
        mutated[pos] = int(rng.integers(0, 256))
        mutated = _fix_crc(bytes(mutated))
        if _reference_accepts(mutated):
            np.testing.assert_array_equal(ops.decode(mutated).numpy(), codec.decode(mutated))
            y = ops.sparse_matmul(np.ones((1, 40), np.float32), mutated).numpy()
            np.testing.assert_allclose(y, np.ones((1, 40)) @ codec.decode(mutated).T, rtol=1e-5, atol=1e-5)
        else:
            rejected += 1
            with pytest.raises(tf.errors.InvalidArgumentError):
                ops.decode(mutated)
            with pytest.raises(tf.errors.InvalidArgumentError):
                ops.embedding_lookup([0], mutated)
    assert rejected > 0


def _fix_crc(blob: bytes) -> bytes:
    """Recomputes the container CRC (magic, version, varint body_len, crc32 LE, body; FORMAT.md)."""
    import zlib

    pos = 3
    while blob[pos] & 0x80:
        pos += 1
    pos += 1
    body = blob[pos + 4:]
    return blob[:pos] + zlib.crc32(body).to_bytes(4, "little") + body


def test_wrong_version_is_named():
    blob = bytearray(codec.encode(_weights(), bits=2))
    blob[2] = 99
    with pytest.raises(tf.errors.InvalidArgumentError, match="version"):
        ops.sparse_matmul(np.ones((1, 40), np.float32), bytes(blob))
    with pytest.raises(tf.errors.InvalidArgumentError, match="version"):
        ops.decode(bytes(blob))


def test_garbage_and_empty_blobs():
    for blob in (b"", b"\x00", b"DC", bytes(range(256)), b"DC\x01" + b"\xff" * 12):
        with pytest.raises(tf.errors.InvalidArgumentError, match="DcDecode"):
            ops.decode(blob)


def test_inner_dimension_mismatch_is_named():
    blob = codec.encode(_weights(), bits=2)
    with pytest.raises(tf.errors.InvalidArgumentError, match="inner dimension 41.*in=40"):
        ops.sparse_matmul(np.ones((3, 41), np.float32), blob)
    with pytest.raises(tf.errors.InvalidArgumentError, match="rank 2"):
        ops.sparse_matmul(np.ones((40,), np.float32), blob)


def test_inner_dimension_mismatch_caught_at_trace_time_for_constant_blobs():
    data = np.frombuffer(codec.encode(_weights(), bits=2), np.uint8)

    @tf.function
    def f(x):
        blob = tf.constant(data)  # a Const node: the shape function reads its header
        y = ops.sparse_matmul(x, blob)
        assert y.shape.as_list() == [None, 24], y.shape
        return y

    f.get_concrete_function(tf.TensorSpec([None, 40]))
    with pytest.raises(ValueError, match="DcSparseMatMul"):
        f.get_concrete_function(tf.TensorSpec([None, 39]))


def test_non_matrix_blob_is_rejected_by_matmul_and_embedding():
    blob = codec.encode(np.ones((2, 3, 4), np.float32), bits=1)
    with pytest.raises(tf.errors.InvalidArgumentError, match="rank-2"):
        ops.sparse_matmul(np.ones((1, 12), np.float32), blob)
    with pytest.raises(tf.errors.InvalidArgumentError, match="rank-2"):
        ops.embedding_lookup([0], blob)


@pytest.mark.parametrize("bad", [-1, -24, 24, 10 ** 6])
def test_out_of_range_ids(bad):
    # Negative ids are errors too (no wrapping), as in stock TFLite's GATHER; the message is the delegate's.
    blob = codec.encode(_weights(), bits=2)
    for dtype in (tf.int32, tf.int64):
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=f"DcEmbeddingLookup: id {bad} at flat position 1 is out of range \\[0, 24\\)"):
            ops.embedding_lookup(tf.constant([[0, bad]], dtype), blob)


def test_python_type_errors():
    blob = codec.encode(_weights(), bits=2)
    with pytest.raises(TypeError, match="uint8"):
        ops.decode(np.frombuffer(blob, np.uint8).astype(np.int32))
    with pytest.raises(TypeError, match="float"):
        ops.sparse_matmul(np.ones((1, 40), np.int32), blob)
    with pytest.raises(TypeError, match="integers"):
        ops.embedding_lookup([0.5], blob)
    with pytest.raises(tf.errors.InvalidArgumentError, match="rank-1"):
        ops.decode(tf.zeros((2, 2), tf.uint8))
