"""DcDecode / DcSparseMatMul / DcEmbeddingLookup against the pure-numpy reference decoder (dc_keras.codec)."""
import threading

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dc_keras import codec
from dc_keras import ops


def clustered(shape, sparsity, bits, rng, dtype=np.float32):
    """A pruned + weight-shared tensor: `sparsity` zeros, the rest drawn from 2^bits distinct values."""
    centroids = rng.normal(size=2 ** bits).astype(dtype)
    centroids[centroids == 0] = 0.5
    w = centroids[rng.integers(0, centroids.size, size=shape)]
    w[rng.random(shape) < sparsity] = 0
    return w.astype(np.float32)


@pytest.mark.parametrize("shape", [(7,), (5, 9), (3, 4, 5), (3, 3, 8, 16), (2, 1000)])
@pytest.mark.parametrize("coder", ["huffman", "rans", "raw"])
@pytest.mark.parametrize("layout", ["sparse", "dense"])
def test_decode_matches_reference(shape, coder, layout):
    rng = np.random.default_rng(hash((shape, coder, layout)) % 2 ** 32)
    w = clustered(shape, 0.9, 3, rng)  # 8 values: leaves the dense layout a codebook slot for zero
    blob = codec.encode(w, bits=4, index_bits=4, coder=coder, layout=layout)
    out = ops.decode(blob).numpy()
    np.testing.assert_array_equal(out, codec.decode(blob))
    np.testing.assert_array_equal(out, w)


def test_decode_static_shape_from_constant_blob():
    w = clustered((6, 10), 0.5, 3, np.random.default_rng(0))
    blob = tf.constant(np.frombuffer(codec.encode(w, bits=3), np.uint8))

    @tf.function
    def f():
        out = ops.decode(blob)
        assert out.shape == (6, 10), out.shape  # shape function read the constant blob's header
        return out

    np.testing.assert_array_equal(f().numpy(), w)


@pytest.mark.parametrize("batch", [0, 1, 2, 3, 5, 8, 9, 16, 17, 40])
def test_sparse_matmul_batches(batch):
    rng = np.random.default_rng(batch)
    w = clustered((37, 300), 0.9, 5, rng)
    blob = codec.encode(w, bits=5, index_bits=5)
    x = rng.normal(size=(batch, 300)).astype(np.float32)
    y = ops.sparse_matmul(x, blob).numpy()
    assert y.shape == (batch, 37)
    np.testing.assert_allclose(y, x @ codec.decode(blob).T, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("coder", ["huffman", "rans", "raw"])
def test_sparse_matmul_long_gaps_use_fillers(coder):
    # Rows sparser than 1/255 force filler entries in the decoded form; some rows are empty.
    rng = np.random.default_rng(7)
    w = clustered((20, 3000), 0.998, 3, rng)
    w[3] = 0
    w[5, -1] = w[w != 0][0]  # a last-column entry after a long gap
    blob = codec.encode(w, bits=3, index_bits=2, coder=coder)
    x = rng.normal(size=(4, 3000)).astype(np.float32)
    np.testing.assert_allclose(ops.sparse_matmul(x, blob).numpy(), x @ w.T, rtol=1e-5, atol=1e-6)


def test_sparse_matmul_all_zero_and_dense_layout():
    x = np.ones((3, 8), np.float32)
    zero = codec.encode(np.zeros((4, 8), np.float32), bits=1)
    np.testing.assert_array_equal(ops.sparse_matmul(x, zero).numpy(), np.zeros((3, 4)))
    w = clustered((4, 8), 0.0, 2, np.random.default_rng(1))
    dense_blob = codec.encode(w, bits=2, layout="dense")
    np.testing.assert_allclose(ops.sparse_matmul(x, dense_blob).numpy(), x @ w.T, rtol=1e-5)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.integers(1, 40), cols=st.integers(1, 600), batch=st.integers(1, 20),
       sparsity=st.floats(0.0, 0.999), bits=st.integers(1, 8), index_bits=st.integers(2, 8),
       coder=st.sampled_from(["huffman", "rans", "raw"]), seed=st.integers(0, 2 ** 31))
def test_sparse_matmul_property(rows, cols, batch, sparsity, bits, index_bits, coder, seed):
    rng = np.random.default_rng(seed)
    w = clustered((rows, cols), sparsity, bits, rng)
    blob = codec.encode(w, bits=bits, index_bits=index_bits, coder=coder)
    x = rng.normal(size=(batch, cols)).astype(np.float32)
    reference = codec.decode(blob)
    np.testing.assert_array_equal(reference, w)
    expected = x.astype(np.float64) @ reference.T.astype(np.float64)
    scale = np.abs(x).astype(np.float64) @ np.abs(reference.T).astype(np.float64) + 1e-30
    got = ops.sparse_matmul(x, blob).numpy()
    assert np.all(np.abs(got - expected) <= 1e-5 * scale)


@pytest.mark.parametrize("dtype", [tf.int32, tf.int64])
def test_embedding_lookup_matches_reference(dtype):
    rng = np.random.default_rng(3)
    table = clustered((500, 24), 0.8, 5, rng)
    blob = codec.encode(table, bits=5, index_bits=5)
    ids = rng.integers(0, 500, size=(4, 7))
    ids[0, 0], ids[1, 1] = 0, 499
    out = ops.embedding_lookup(tf.constant(ids, dtype), blob).numpy()
    assert out.shape == (4, 7, 24)
    np.testing.assert_array_equal(out, codec.decode(blob)[ids])
    scalar = ops.embedding_lookup(tf.constant(3, dtype), blob).numpy()
    np.testing.assert_array_equal(scalar, table[3])
    assert ops.embedding_lookup(tf.zeros([0], dtype), blob).shape == (0, 24)


def test_repeated_calls_hit_the_cache_and_a_changed_blob_is_decoded_again():
    rng = np.random.default_rng(11)
    w1 = clustered((64, 128), 0.9, 5, rng)
    w2 = w1.copy()
    w2[w2 != 0] *= 2  # same sparsity pattern and so nearly the same blob, different codebook
    b1, b2 = codec.encode(w1, bits=5), codec.encode(w2, bits=5)
    assert len(b1) == len(b2)
    blob = tf.Variable(np.frombuffer(b1, np.uint8))
    x = rng.normal(size=(2, 128)).astype(np.float32)

    @tf.function
    def f(x):
        return ops.sparse_matmul(x, blob), ops.embedding_lookup([1, 2], blob), ops.decode(blob)

    f(x)
    before = ops.decode_count()
    for _ in range(5):
        y, _, _ = f(x)
    assert ops.decode_count() == before  # no decode after the first call
    np.testing.assert_allclose(y.numpy(), x @ w1.T, rtol=1e-5, atol=1e-6)

    blob.assign(np.frombuffer(b2, np.uint8))  # in-place change: same buffer size, new content
    y, e, d = f(x)
    assert ops.decode_count() == before + 3  # each of the three kernels noticed the change
    np.testing.assert_allclose(y.numpy(), x @ w2.T, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(e.numpy(), w2[[1, 2]])
    np.testing.assert_array_equal(d.numpy(), w2)


def test_eager_calls_with_alternating_blobs_stay_cached():
    # Eager mode shares one kernel between all calls of an op: its cache must hold several blobs.
    rng = np.random.default_rng(12)
    blobs = [codec.encode(clustered((16, 32), 0.7, 3, rng), bits=3) for _ in range(3)]
    tensors = [ops._as_blob(b) for b in blobs]
    x = tf.ones((1, 32))
    for t in tensors:
        ops.sparse_matmul(x, t)
    before = ops.decode_count()
    for _ in range(3):
        for t in tensors:
            ops.sparse_matmul(x, t)
    assert ops.decode_count() == before


def test_concurrent_calls_are_consistent():
    rng = np.random.default_rng(5)
    w = clustered((256, 512), 0.9, 5, rng)
    blob = tf.constant(np.frombuffer(codec.encode(w, bits=5), np.uint8))
    xs = [rng.normal(size=(3, 512)).astype(np.float32) for _ in range(8)]
    f = tf.function(lambda x: ops.sparse_matmul(x, blob))
    results, errors = {}, []

    def work(i):
        try:
            for _ in range(5):
                results[i] = f(xs[i]).numpy()
        except Exception as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, x in enumerate(xs):
        np.testing.assert_allclose(results[i], x @ w.T, rtol=1e-5, atol=1e-5)


def test_gradient_through_sparse_matmul_raises_naming_the_op():
    blob = codec.encode(clustered((4, 6), 0.5, 2, np.random.default_rng(2)), bits=2)
    x = tf.Variable(np.ones((2, 6), np.float32))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(ops.sparse_matmul(x * 2, blob))
    with pytest.raises(LookupError, match="DcSparseMatMul.*no gradient"):
        tape.gradient(loss, x)


@pytest.mark.parametrize("op_type", ["DcDecode", "DcSparseMatMul", "DcEmbeddingLookup"])
def test_every_op_registers_a_raising_gradient(op_type):
    # DcDecode / DcEmbeddingLookup take only integer inputs, which a tape never differentiates, so call the
    # registered gradient functions directly: they must raise rather than return zeros.
    from tensorflow.python.framework import ops as tf_ops

    blob = codec.encode(np.ones((2, 2), np.float32), bits=1)

    @tf.function
    def graph():
        return ops.sparse_matmul(tf.ones((1, 2)), blob)

    op = [o for o in graph.get_concrete_function().graph.get_operations() if o.type == "DcSparseMatMul"][0]
    with pytest.raises(LookupError, match=op_type):
        tf_ops.gradient_registry.lookup(op_type)(op, tf.ones((1, 2)))


_GENERIC_PATH_SCRIPT = """
import numpy as np
from dc_keras import codec, ops
rng = np.random.default_rng(0)
c = rng.normal(size=16).astype(np.float32)
w = c[rng.integers(0, 16, size=(50, 700))]
w[rng.random(w.shape) < 0.9] = 0
blob = codec.encode(w, bits=4)
for batch in (2, 5, 8, 13, 16, 35):
    x = rng.normal(size=(batch, 700)).astype(np.float32)
    np.testing.assert_allclose(ops.sparse_matmul(x, blob).numpy(), x @ w.T, rtol=1e-5, atol=1e-5)
print("ok")
"""


def test_generic_kernels_without_avx2():
    """CPUs without AVX2 run the generic vector kernels: force that path in a subprocess."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, DC_KERAS_DISABLE_AVX2="1")
    result = subprocess.run([sys.executable, "-c", _GENERIC_PATH_SCRIPT], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]
