// TensorFlow custom ops that run Deep Compression blobs without expanding them to dense weights:
//
//   DcDecode(blob: uint8[n]) -> float[shape from the blob]
//   DcSparseMatMul(x: float[batch, in], blob) -> float[batch, out]      (blob holds W as [out, in])
//   DcEmbeddingLookup(ids: int32|int64[...], blob) -> float[..., dim]   (blob holds [vocab, dim])
//   DcDecodeCount() -> int64 scalar: how many times any kernel decoded a blob (cache-behaviour tests)
//
// Each kernel keeps a small cache of decoded blobs keyed by their content, so a model that runs the same
// compressed weights every step pays for Huffman decoding once, while a blob that changed in place (a
// reassigned variable) is decoded afresh. Blob bytes are untrusted: every codec error and every
// inconsistency found by ValidateSparseMatrix (the kernel library's check, shared with the delegate) becomes InvalidArgument,
// never a crash.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <list>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "dc_codec.h"
#include "kernels/fully_connected.h"  // the FC loops the TFLite delegate runs too (ops/kernels)
#include "kernels/gather.h"
#include "kernels/row_splitter.h"
#include "kernels/weights.h"
#include "tensorflow/core/framework/allocator.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/util/work_sharder.h"

namespace dc {
namespace tfops {
namespace {

using ::tensorflow::DEVICE_CPU;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
using ::tensorflow::shape_inference::DimensionHandle;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;
using Status = ::tensorflow::Status;
namespace errors = ::tensorflow::errors;

// Attribute every op has: the most bytes one blob may decode to (codec::DenseDecodeBytes for DcDecode,
// codec::SparseDecodeBytes for the others), checked from the header before anything is allocated, so that
// a blob of a few bytes declaring billions of zeros is refused instead of allocated.
constexpr char kMaxDecodedBytesAttr[] = "max_decoded_bytes: int = 2147483648";
static_assert(codec::kDefaultMaxDecodedBytes == 2147483648u, "kMaxDecodedBytesAttr repeats the codec's default");

// How many distinct blobs one kernel instance remembers. In a graph each node has its own kernel and
// sees one blob; in eager mode TensorFlow shares one kernel between all calls of an op, so a model with
// several compressed layers run eagerly needs a few entries to avoid decoding on every call.
constexpr size_t kCacheEntries = 8;

std::atomic<int64_t> g_decode_count{0};

Status CodecError(const char* op, const char* what, const codec::Status& status) {
  return errors::InvalidArgument(op, ": ", what, ": ", std::string(status.message()));
}

using kernels::ShapeString;

// Reads the max_decoded_bytes attribute of an op under construction.
Status ReadMaxDecodedBytes(OpKernelConstruction* ctx, int64_t* max_bytes) {
  TF_RETURN_IF_ERROR(ctx->GetAttr("max_decoded_bytes", max_bytes));
  if (*max_bytes < 1) {
    return errors::InvalidArgument(ctx->def().op(), " '", ctx->def().name(), "': max_decoded_bytes must be >= 1, got ",
                                   *max_bytes);
  }
  return Status();
}

// ResourceExhausted when decoding `info` needs `need` bytes (`form`: what it decodes to) over `max_bytes`.
Status CheckDecodeBudget(const std::string& op, const codec::BlobInfo& info, uint64_t need, const char* form,
                         int64_t max_bytes) {
  if (need <= static_cast<uint64_t>(max_bytes)) return Status();
  return errors::ResourceExhausted(op, ": the blob declares a tensor of shape ", ShapeString(info.shape),
                                   " that decodes to ", need, " bytes of ", form, ", over max_decoded_bytes = ",
                                   max_bytes, " (pass a larger max_decoded_bytes to allow it)");
}

// With DC_KERAS_TEST_THROW_BAD_ALLOC=1 in the environment every decode (cache miss) throws std::bad_alloc
// as a failed allocation would: lets tests reach Compute's exception handler on demand.
void ThrowIfTestAsksForBadAlloc() {
  const char* value = std::getenv("DC_KERAS_TEST_THROW_BAD_ALLOC");
  if (value != nullptr && value[0] == '1') throw std::bad_alloc();
}

// Runs a kernel's Compute so that no C++ exception escapes into TensorFlow's executor (which would abort the
// process): std::bad_alloc becomes ResourceExhausted, anything else Internal, both naming the op and node.
template <typename Body>
void GuardedCompute(OpKernelContext* ctx, const OpKernel& kernel, Body&& body) noexcept {
  try {
    body();
    return;
  } catch (const std::bad_alloc&) {
    ctx->CtxFailure(errors::ResourceExhausted(kernel.type_string(), " '", kernel.name(),
                                              "': out of memory (std::bad_alloc) while decoding or computing"));
  } catch (const std::exception& error) {
    ctx->CtxFailure(errors::Internal(kernel.type_string(), " '", kernel.name(), "': C++ exception: ", error.what()));
  } catch (...) {
    ctx->CtxFailure(errors::Internal(kernel.type_string(), " '", kernel.name(), "': unknown C++ exception"));
  }
}

// Remembers the decoded form of the last few blobs seen, keyed by their bytes (a stored copy compared
// with memcmp: exact, so no hash collision can hand back another blob's weights). Thread-safe: TensorFlow
// may call Compute on one kernel from several threads at once.
template <typename Payload>
class BlobCache {
 public:
  using Builder = std::function<Status(const uint8_t* data, size_t size, Payload* out)>;

  // Sets *out to the payload for the blob [data, data+size), building it with `build` on a miss.
  Status Get(const uint8_t* data, size_t size, const Builder& build, std::shared_ptr<const Payload>* out) {
    std::vector<std::shared_ptr<const Entry>> snapshot;
    {
      std::lock_guard<std::mutex> lock(mu_);
      snapshot.assign(entries_.begin(), entries_.end());
    }
    // Compare outside the lock: the entries are immutable, and a multi-megabyte memcmp should not
    // serialise concurrent callers.
    for (const auto& entry : snapshot) {
      if (entry->blob.size() == size && (size == 0 || std::memcmp(entry->blob.data(), data, size) == 0)) {
        Touch(entry);
        *out = std::shared_ptr<const Payload>(entry, &entry->payload);
        return Status();
      }
    }
    ThrowIfTestAsksForBadAlloc();
    auto entry = std::make_shared<Entry>();
    entry->blob.assign(data, data + size);
    Status status = build(data, size, &entry->payload);
    if (!status.ok()) return status;
    g_decode_count.fetch_add(1, std::memory_order_relaxed);
    std::shared_ptr<const Entry> frozen = std::move(entry);
    {
      std::lock_guard<std::mutex> lock(mu_);
      entries_.push_front(frozen);
      if (entries_.size() > kCacheEntries) entries_.pop_back();
    }
    *out = std::shared_ptr<const Payload>(frozen, &frozen->payload);
    return Status();
  }

 private:
  struct Entry {
    std::vector<uint8_t> blob;
    Payload payload;
  };

  // Moves a hit to the front so that eviction drops the least recently used blob.
  void Touch(const std::shared_ptr<const Entry>& entry) {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = entries_.begin(); it != entries_.end(); ++it) {
      if (*it == entry) {
        entries_.splice(entries_.begin(), entries_, it);
        return;
      }
    }
  }

  std::mutex mu_;
  std::list<std::shared_ptr<const Entry>> entries_;
};

// Reads the blob input: must be a rank-1 uint8 tensor.
Status BlobInput(OpKernelContext* ctx, int index, const char* op, const uint8_t** data, size_t* size) {
  const Tensor& blob = ctx->input(index);
  if (blob.dims() != 1) {
    return errors::InvalidArgument(op, ": blob must be a rank-1 uint8 tensor, got shape ",
                                   blob.shape().DebugString());
  }
  *data = blob.flat<uint8_t>().data();
  *size = static_cast<size_t>(blob.NumElements());
  return Status();
}

// Turns a failed kernels::OpenWeights / LoadWeights into the op's error; `need` names the decoded form.
Status WeightsError(const std::string& op, const kernels::WeightsResult& r, const codec::BlobInfo& info,
                    const kernels::WeightsSpec& spec, const char* form) {
  switch (r.stage) {
    case kernels::WeightsStage::kOk:
      return Status();
    case kernels::WeightsStage::kHeader:
      return errors::InvalidArgument(op, ": invalid blob header: ", r.message);
    case kernels::WeightsStage::kShape:
      return errors::InvalidArgument(op, ": expected a rank-", spec.rank, " weight in the blob, got rank ",
                                     info.shape.size());
    case kernels::WeightsStage::kBudget:
      return CheckDecodeBudget(op, info, r.needed_bytes, form, static_cast<int64_t>(spec.max_bytes));
    case kernels::WeightsStage::kDecode:
      return errors::InvalidArgument(op, ": cannot decode blob: ", r.message);
    case kernels::WeightsStage::kInvalid:
      return errors::InvalidArgument(op, ": corrupt blob: ", r.message);
  }
  return errors::Internal(op, ": unknown weights stage");
}

// Decodes a rank-2 blob into the sparse form, parsing it once, and proves it safe for the compute loops;
// refuses it when the sparse form would exceed `max_bytes`.
Status BuildSparse(const char* op, const uint8_t* data, size_t size, int64_t max_bytes, codec::SparseMatrix* out) {
  kernels::WeightsSpec spec;
  spec.rank = 2;
  spec.max_bytes = static_cast<uint64_t>(max_bytes);
  codec::BlobInfo info;
  const kernels::WeightsResult r = kernels::LoadWeights(data, size, spec, out, nullptr, &info);
  return WeightsError(op, r, info, spec, "sparse form");
}

// The sparse form of input `index`'s blob, decoded once per distinct blob and kept in `cache`.
Status CachedSparseInput(OpKernelContext* ctx, int index, const char* op, int64_t max_bytes,
                         BlobCache<codec::SparseMatrix>* cache, std::shared_ptr<const codec::SparseMatrix>* out) {
  const uint8_t* data;
  size_t size;
  TF_RETURN_IF_ERROR(BlobInput(ctx, index, op, &data, &size));
  auto build = [op, max_bytes](const uint8_t* d, size_t n, codec::SparseMatrix* matrix) {
    return BuildSparse(op, d, n, max_bytes, matrix);
  };
  return cache->Get(data, size, build, out);
}

// The kernel library's in-memory form of input `index`'s blob (block, chunked, pairs or the delta/code walk), built once
// per distinct blob and kept in `cache`: DcSparseMatMul runs the same loops as the TFLite delegate.
Status CachedWeightsInput(OpKernelContext* ctx, int index, const char* op, int64_t max_bytes,
                          BlobCache<kernels::FullyConnectedWeights>* cache,
                          std::shared_ptr<const kernels::FullyConnectedWeights>* out) {
  const uint8_t* data;
  size_t size;
  TF_RETURN_IF_ERROR(BlobInput(ctx, index, op, &data, &size));
  auto build = [op, max_bytes](const uint8_t* d, size_t n, kernels::FullyConnectedWeights* weights) -> Status {
    // A block-layout blob keeps its block form: the block loops run on it.
    kernels::WeightsSpec spec;
    spec.rank = 2;
    spec.accept_block = true;
    spec.max_bytes = static_cast<uint64_t>(max_bytes);
    codec::BlobInfo info;
    codec::SparseMatrix matrix;
    codec::BlockSparseMatrix block;
    const kernels::WeightsResult r = kernels::LoadWeights(d, n, spec, &matrix, nullptr, &info, &block);
    TF_RETURN_IF_ERROR(WeightsError(op, r, info, spec, kernels::DecodesToBlocks(info, spec) ? "block form"
                                                                                           : "sparse form"));
    const kernels::Status st = r.block ? weights->Init(std::move(block)) : weights->Init(std::move(matrix));
    if (!st.ok()) return errors::InvalidArgument(op, ": corrupt blob: ", st.message());
    return Status();
  };
  return cache->Get(data, size, build, out);
}

// Splits the kernel library's rows over TensorFlow's intra-op threads.
class ShardSplitter : public kernels::RowSplitter {
 public:
  ShardSplitter(const tensorflow::DeviceBase::CpuWorkerThreads* threads, int64_t cost_per_row)
      : threads_(threads), cost_per_row_(cost_per_row) {}

  void ForRanges(int64_t rows, int64_t, const std::function<void(int64_t, int64_t)>& fn) override {
    tensorflow::Shard(threads_->num_threads, threads_->workers, rows, cost_per_row_, fn);
  }

 private:
  const tensorflow::DeviceBase::CpuWorkerThreads* threads_;
  int64_t cost_per_row_;
};

// Shape function helper: when the blob is a graph constant, its header gives the weight's shape.
// Returns false (leaving *shape empty) when the blob is not known at graph-construction time.
Status ConstantBlobShape(InferenceContext* c, int index, const char* op, std::vector<int64_t>* shape,
                         bool* known) {
  *known = false;
  const Tensor* blob = c->input_tensor(index);
  if (blob == nullptr) return Status();
  if (blob->dims() != 1 || blob->dtype() != tensorflow::DT_UINT8) {
    return errors::InvalidArgument(op, ": blob must be a rank-1 uint8 tensor");
  }
  codec::BlobInfo info;
  codec::Status st = codec::ParseInfo(blob->flat<uint8_t>().data(), blob->NumElements(), &info);
  if (!st.ok()) return CodecError(op, "invalid blob header", st);
  shape->assign(info.shape.begin(), info.shape.end());
  *known = true;
  return Status();
}

// ---------------------------------------------------------------------------------------------------------
// DcDecode

class DcDecodeOp : public OpKernel {
 public:
  explicit DcDecodeOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ReadMaxDecodedBytes(ctx, &max_decoded_bytes_));
  }

  void Compute(OpKernelContext* ctx) override {
    GuardedCompute(ctx, *this, [&] { ComputeUnguarded(ctx); });
  }

 private:
  void ComputeUnguarded(OpKernelContext* ctx) {
    const uint8_t* data;
    size_t size;
    OP_REQUIRES_OK(ctx, BlobInput(ctx, 0, "DcDecode", &data, &size));
    std::shared_ptr<const Tensor> dense;
    auto build = [this](const uint8_t* d, size_t n, Tensor* out) -> Status {
      kernels::WeightsSpec spec;
      spec.dense = true;
      spec.max_bytes = static_cast<uint64_t>(max_decoded_bytes_);
      codec::ParsedBlob blob;
      const kernels::WeightsResult opened = kernels::OpenWeights(d, n, spec, &blob);
      const codec::BlobInfo& info = blob.info();
      if (opened.stage == kernels::WeightsStage::kBudget)
        return WeightsError("DcDecode '" + name() + "'", opened, info, spec, "float32");
      TF_RETURN_IF_ERROR(WeightsError("DcDecode", opened, info, spec, "float32"));
      std::vector<int64_t> dims(info.shape.begin(), info.shape.end());
      const int64_t count = static_cast<int64_t>(info.num_elements);  // <= 2^32 - 1 (the codec checks)
      TensorShape shape;
      TF_RETURN_IF_ERROR(TensorShape::BuildTensorShape(dims, &shape));
      // The cached tensor outlives this step, so it comes from the process-wide CPU allocator (as the
      // Const op's value does) rather than from a step-scoped one.
      *out = Tensor(tensorflow::cpu_allocator(), tensorflow::DT_FLOAT, shape);
      if (count > 0 && !out->IsInitialized()) {
        return errors::ResourceExhausted("DcDecode: cannot allocate ", count, " floats for the decoded weights");
      }
      const codec::Status st = codec::DecodeDense(blob, out->flat<float>().data(), static_cast<size_t>(count));
      if (!st.ok()) return CodecError("DcDecode", "cannot decode blob", st);
      return Status();
    };
    OP_REQUIRES_OK(ctx, cache_.Get(data, size, build, &dense));
    // Handing out the cached buffer is safe: the cache holds a reference, so TensorFlow never forwards it
    // to a consumer for in-place mutation (the same scheme as the Const op).
    ctx->set_output(0, *dense);
  }

  int64_t max_decoded_bytes_ = 0;
  BlobCache<Tensor> cache_;
};

// ---------------------------------------------------------------------------------------------------------
// DcSparseMatMul

class DcSparseMatMulOp : public OpKernel {
 public:
  explicit DcSparseMatMulOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ReadMaxDecodedBytes(ctx, &max_decoded_bytes_));
  }

  void Compute(OpKernelContext* ctx) override {
    GuardedCompute(ctx, *this, [&] { ComputeUnguarded(ctx); });
  }

 private:
  void ComputeUnguarded(OpKernelContext* ctx) {
    const Tensor& x = ctx->input(0);
    OP_REQUIRES(ctx, x.dims() == 2,
                errors::InvalidArgument("DcSparseMatMul: x must be rank 2 [batch, in], got shape ",
                                        x.shape().DebugString()));
    std::shared_ptr<const kernels::FullyConnectedWeights> cached;
    OP_REQUIRES_OK(ctx, CachedWeightsInput(ctx, 1, "DcSparseMatMul", max_decoded_bytes_, &cache_, &cached));
    const kernels::FullyConnectedWeights& w = *cached;

    const int64_t batch = x.dim_size(0), in = x.dim_size(1);
    OP_REQUIRES(ctx, in == w.cols(),
                errors::InvalidArgument("DcSparseMatMul: x has inner dimension ", in,
                                        " but the blob holds W as [out=", w.rows(), ", in=", w.cols(),
                                        "]; expected x of shape [batch, ", w.cols(), "]"));
    Tensor* y = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({batch, w.rows()}), &y));
    if (batch == 0 || w.rows() == 0) return;

    Tensor scratch;
    const int64_t scratch_floats = static_cast<int64_t>(std::max<size_t>(w.ScratchFloats(batch), 1));
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(tensorflow::DT_FLOAT, TensorShape({scratch_floats}), &scratch));
    // Shard's cost unit is roughly one cycle: a nonzero costs a few loads per input row of the block.
    const int64_t nnz_per_row = static_cast<int64_t>(w.nonzeros()) / std::max<int64_t>(w.rows(), 1);
    ShardSplitter split(ctx->device()->tensorflow_cpu_worker_threads(),
                        (2 * nnz_per_row + 8) * std::min<int64_t>(batch, kernels::kSparseBatchBlock));
    w.Run(/*bias=*/nullptr, x.flat<float>().data(), batch, y->flat<float>().data(), kernels::Activation::kNone,
          scratch.flat<float>().data(), &split);
  }

  int64_t max_decoded_bytes_ = 0;
  BlobCache<kernels::FullyConnectedWeights> cache_;
};

// ---------------------------------------------------------------------------------------------------------
// DcEmbeddingLookup

template <typename Index>
class DcEmbeddingLookupOp : public OpKernel {
 public:
  explicit DcEmbeddingLookupOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ReadMaxDecodedBytes(ctx, &max_decoded_bytes_));
  }

  void Compute(OpKernelContext* ctx) override {
    GuardedCompute(ctx, *this, [&] { ComputeUnguarded(ctx); });
  }

 private:
  void ComputeUnguarded(OpKernelContext* ctx) {
    const Tensor& ids = ctx->input(0);
    std::shared_ptr<const codec::SparseMatrix> cached;
    OP_REQUIRES_OK(ctx, CachedSparseInput(ctx, 1, "DcEmbeddingLookup", max_decoded_bytes_, &cache_, &cached));
    const codec::SparseMatrix& m = *cached;

    const auto flat_ids = ids.flat<Index>();
    const int64_t n = flat_ids.size();
    const kernels::Status valid = kernels::CheckGatherIndices(flat_ids.data(), n, m.rows);
    OP_REQUIRES(ctx, valid.ok(), errors::InvalidArgument("DcEmbeddingLookup: ", valid.message()));
    TensorShape out_shape = ids.shape();
    OP_REQUIRES_OK(ctx, out_shape.AddDimWithStatus(m.cols));
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, out_shape, &out));
    if (n == 0 || m.cols == 0) return;
    float* od = out->flat<float>().data();
    const auto* threads = ctx->device()->tensorflow_cpu_worker_threads();
    tensorflow::Shard(threads->num_threads, threads->workers, n, 4 * m.cols + 32, [&](int64_t begin, int64_t end) {
      kernels::GatherRows(m, flat_ids.data(), begin, end, od + begin * m.cols);
    });
  }

  int64_t max_decoded_bytes_ = 0;
  BlobCache<codec::SparseMatrix> cache_;
};

class DcDecodeCountOp : public OpKernel {
 public:
  explicit DcDecodeCountOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}
  void Compute(OpKernelContext* ctx) override {
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({}), &out));
    out->scalar<int64_t>()() = g_decode_count.load(std::memory_order_relaxed);
  }
};

// ---------------------------------------------------------------------------------------------------------
// Registration

REGISTER_OP("DcDecode")
    .Input("blob: uint8")
    .Output("weights: float")
    .Attr(kMaxDecodedBytesAttr)
    .SetShapeFn([](InferenceContext* c) -> Status {
      ShapeHandle unused;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 1, &unused));
      std::vector<int64_t> shape;
      bool known = false;
      TF_RETURN_IF_ERROR(ConstantBlobShape(c, 0, "DcDecode", &shape, &known));
      if (!known) {
        c->set_output(0, c->UnknownShape());
        return Status();
      }
      std::vector<DimensionHandle> dims;
      for (int64_t d : shape) dims.push_back(c->MakeDim(d));
      c->set_output(0, c->MakeShape(dims));
      return Status();
    })
    .Doc(R"doc(
Decodes a Deep Compression blob to its dense float weights (C order, shape from the blob header).
Decoded weights are cached per kernel, keyed by the blob's bytes.
)doc");

REGISTER_OP("DcSparseMatMul")
    .Input("x: float")
    .Input("blob: uint8")
    .Output("y: float")
    .Attr(kMaxDecodedBytesAttr)
    .SetShapeFn([](InferenceContext* c) -> Status {
      ShapeHandle x, unused;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &x));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 1, &unused));
      std::vector<int64_t> shape;
      bool known = false;
      TF_RETURN_IF_ERROR(ConstantBlobShape(c, 1, "DcSparseMatMul", &shape, &known));
      DimensionHandle out = c->UnknownDim();
      if (known) {
        if (shape.size() != 2) {
          return errors::InvalidArgument("DcSparseMatMul: expected a rank-2 weight in the blob, got rank ",
                                         shape.size());
        }
        DimensionHandle in;
        TF_RETURN_IF_ERROR(c->Merge(c->Dim(x, 1), c->MakeDim(shape[1]), &in));
        out = c->MakeDim(shape[0]);
      }
      c->set_output(0, c->Matrix(c->Dim(x, 0), out));
      return Status();
    })
    .Doc(R"doc(
y = x @ W^T computed on the sparse, codebook-indexed form of W ([out, in] in the blob), never
materialising dense W. The decoded sparse form is cached per kernel, keyed by the blob's bytes.
)doc");

REGISTER_OP("DcEmbeddingLookup")
    .Input("ids: Tindices")
    .Input("blob: uint8")
    .Attr("Tindices: {int32, int64}")
    .Attr(kMaxDecodedBytesAttr)
    .Output("embeddings: float")
    .SetShapeFn([](InferenceContext* c) -> Status {
      ShapeHandle unused;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 1, &unused));
      std::vector<int64_t> shape;
      bool known = false;
      TF_RETURN_IF_ERROR(ConstantBlobShape(c, 1, "DcEmbeddingLookup", &shape, &known));
      if (known && shape.size() != 2) {
        return errors::InvalidArgument("DcEmbeddingLookup: expected a rank-2 table in the blob, got rank ",
                                       shape.size());
      }
      ShapeHandle out;
      TF_RETURN_IF_ERROR(
          c->Concatenate(c->input(0), c->Vector(known ? c->MakeDim(shape[1]) : c->UnknownDim()), &out));
      c->set_output(0, out);
      return Status();
    })
    .Doc(R"doc(
Rows `ids` of a compressed [vocab, dim] embedding table, expanded from the cached sparse form.
Out-of-range ids are an InvalidArgument error.
)doc");

REGISTER_OP("DcDecodeCount")
    .Output("count: int64")
    .SetIsStateful()
    .SetShapeFn([](InferenceContext* c) -> Status {
      c->set_output(0, c->Scalar());
      return Status();
    })
    .Doc("Number of blob decodes performed by dc_keras kernels in this process (to observe caching).");

REGISTER_KERNEL_BUILDER(Name("DcDecode").Device(DEVICE_CPU), DcDecodeOp);
REGISTER_KERNEL_BUILDER(Name("DcSparseMatMul").Device(DEVICE_CPU), DcSparseMatMulOp);
REGISTER_KERNEL_BUILDER(Name("DcEmbeddingLookup").Device(DEVICE_CPU).TypeConstraint<int32_t>("Tindices"),
                        DcEmbeddingLookupOp<int32_t>);
REGISTER_KERNEL_BUILDER(Name("DcEmbeddingLookup").Device(DEVICE_CPU).TypeConstraint<int64_t>("Tindices"),
                        DcEmbeddingLookupOp<int64_t>);
REGISTER_KERNEL_BUILDER(Name("DcDecodeCount").Device(DEVICE_CPU), DcDecodeCountOp);

}  // namespace
}  // namespace tfops
}  // namespace dc
