// How the kernels' loops are spread over threads without knowing whose threads: the delegate passes its
// ThreadPool, the TensorFlow ops a splitter over TensorFlow's intra-op threads.
#ifndef DC_KERNELS_ROW_SPLITTER_H_
#define DC_KERNELS_ROW_SPLITTER_H_

#include <cstdint>
#include <functional>

namespace dc::kernels {

// Splits rows [0, rows) into contiguous ranges and runs fn on each, possibly in parallel; returns when all
// are done. Runs everything as one range when there are fewer than `min_rows_per_thread` rows per thread.
class RowSplitter {
 public:
  virtual void ForRanges(int64_t rows, int64_t min_rows_per_thread,
                         const std::function<void(int64_t, int64_t)>& fn) = 0;

 protected:
  ~RowSplitter() = default;
};

// splitter->ForRanges, or fn over everything on the calling thread when there is no splitter.
template <typename Fn>
void SplitRows(RowSplitter* splitter, int64_t rows, int64_t min_rows_per_thread, const Fn& fn) {
  if (splitter == nullptr) return fn(int64_t{0}, rows);
  splitter->ForRanges(rows, min_rows_per_thread, fn);
}

}  // namespace dc::kernels

#endif  // DC_KERNELS_ROW_SPLITTER_H_
