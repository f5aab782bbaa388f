// Turning an op's compressed blob into the weights its kernel computes on, the same way for every op and
// both front ends (the TFLite delegate, the TensorFlow ops): open the blob once (container, CRC32, header),
// check its shape and the decode budget from the header, decode, and prove the result safe for the kernels'
// unchecked loops. Each front end words the failures its own way, so the stage that failed is returned.
#ifndef DC_KERNELS_WEIGHTS_H_
#define DC_KERNELS_WEIGHTS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "dc_codec.h"
#include "kernels/base.h"

namespace dc::kernels {

// Checks the invariants the fast loops rely on (row_ptr monotone and consistent, every column — fillers
// included — inside [0, cols), every code inside the codebook, codebook of 1..256 entries or none for a
// matrix without entries), so that a matrix that passes can never make a kernel read out of bounds.
Status ValidateSparseMatrix(const codec::SparseMatrix& w);

// What an op accepts.
struct WeightsSpec {
  std::vector<int64_t> shape;  // the exact shape required; empty: any shape of rank `rank`
  int rank = -1;               // with an empty `shape`: the rank required (-1: any)
  bool dense = false;          // decode to dense float32 instead of the sparse form
  bool accept_block = false;   // a block-layout blob decodes to the block form (the op has block loops)
  uint64_t max_bytes = codec::kDefaultMaxDecodedBytes;  // most bytes the decode may take (codec::*DecodeBytes)
};

// Where loading stopped.
enum class WeightsStage {
  kOk,
  kHeader,   // the container or header is malformed (message: the codec's)
  kShape,    // the header's shape is not what the op needs (see blob.info().shape)
  kBudget,   // decoding would take needed_bytes > spec.max_bytes
  kDecode,   // a symbol stream or the sparse walk is malformed (message: the codec's)
  kInvalid,  // the decoded matrix fails ValidateSparseMatrix (message: its)
};

struct WeightsResult {
  WeightsStage stage = WeightsStage::kOk;
  std::string message;       // kHeader, kDecode, kInvalid
  uint64_t needed_bytes = 0; // bytes the decode takes (set from kBudget on)
  bool block = false;        // the weights came out in the block form
  bool ok() const { return stage == WeightsStage::kOk; }
};

// True when a blob with header `info`, loaded for `spec`, decodes to the block form: it has a block layout,
// the op accepts blocks and wants no dense floats.
bool DecodesToBlocks(const codec::BlobInfo& info, const WeightsSpec& spec);

// Opens the blob (one parse, one CRC pass) and checks its shape and decode budget against `spec` (for the
// form DecodesToBlocks picks); on success `blob` is ready for DecodeWeights or codec::DecodeDense/
// DecodeSparse/DecodeBlockSparse. [data, data + size) must outlive `blob`.
WeightsResult OpenWeights(const uint8_t* data, size_t size, const WeightsSpec& spec, codec::ParsedBlob* blob);

// Decodes an opened blob: to dense float32 in `dense` when `as_dense`; else a block-layout blob to `block`
// when `block` is given (result.block set), validated by ValidateBlockSparseMatrix; else to `sparse`,
// validated by ValidateSparseMatrix.
WeightsResult DecodeWeights(const codec::ParsedBlob& blob, bool as_dense, codec::SparseMatrix* sparse,
                            std::vector<float>* dense, codec::BlockSparseMatrix* block = nullptr);

// OpenWeights then DecodeWeights; `info` (may be null) receives the header. `block` is used only with
// spec.accept_block.
WeightsResult LoadWeights(const uint8_t* data, size_t size, const WeightsSpec& spec, codec::SparseMatrix* sparse,
                          std::vector<float>* dense, codec::BlobInfo* info = nullptr,
                          codec::BlockSparseMatrix* block = nullptr);

}  // namespace dc::kernels

#endif  // DC_KERNELS_WEIGHTS_H_
