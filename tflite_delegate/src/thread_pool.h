// A small fixed thread pool for splitting one kernel's rows across threads.
//
// Why not std::async per call: a batch-1 FC layer takes well under a millisecond, and creating threads on
// every invoke would cost as much as the work. Workers sleep on a condition variable between calls.
#ifndef DC_DELEGATE_THREAD_POOL_H_
#define DC_DELEGATE_THREAD_POOL_H_

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "kernels/row_splitter.h"

namespace dc::delegate {

using kernels::RowSplitter;

class ThreadPool final : public RowSplitter {
 public:
  // `num_threads` counts the calling thread: 1 means no worker threads at all.
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Runs fn(task) for task in [0, num_tasks), spread over the pool; returns when all are done.
  // Calls from several threads at once are serialised (TFLite invokes one interpreter at a time anyway).
  void ParallelFor(int num_tasks, const std::function<void(int)>& fn);

  // RowSplitter: ParallelForRanges over this pool.
  void ForRanges(int64_t rows, int64_t min_rows_per_thread, const std::function<void(int64_t, int64_t)>& fn) override;

 private:
  void WorkerLoop();
  void RunTasks();

  std::vector<std::thread> workers_;
  std::mutex call_mutex_;  // one ParallelFor at a time
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  const std::function<void(int)>* fn_ = nullptr;
  int num_tasks_ = 0;
  std::atomic<int> next_task_{0};
  int busy_workers_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
};

// Runs fn(first, last) over [0, rows) split into contiguous ranges, about four per thread so uneven rows
// still balance. Runs serially (one call over everything) without a pool, with one thread, or when there
// are fewer than `min_rows_per_thread` rows per thread: tiny work is cheaper than waking workers.
template <typename Fn>
void ParallelForRanges(int64_t rows, ThreadPool* pool, int64_t min_rows_per_thread, const Fn& fn) {
  constexpr int kTasksPerThread = 4;
  const int threads = pool ? pool->num_threads() : 1;
  if (threads <= 1 || rows < min_rows_per_thread * threads) {
    fn(int64_t{0}, rows);
    return;
  }
  const int tasks = static_cast<int>(std::min<int64_t>(rows, int64_t{threads} * kTasksPerThread));
  pool->ParallelFor(tasks, [&](int task) { fn(rows * task / tasks, rows * (task + 1) / tasks); });
}

}  // namespace dc::delegate

#endif  // DC_DELEGATE_THREAD_POOL_H_
