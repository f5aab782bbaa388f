// A small fixed thread pool for splitting one kernel's rows across threads.
//
// Why not std::async per call: a batch-1 FC layer takes well under a millisecond, and creating threads on
// every invoke would cost as much as the work. Workers sleep on a condition variable between calls.
#ifndef DC_DELEGATE_THREAD_POOL_H_
#define DC_DELEGATE_THREAD_POOL_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace dc::delegate {

class ThreadPool {
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

}  // namespace dc::delegate

#endif  // DC_DELEGATE_THREAD_POOL_H_
