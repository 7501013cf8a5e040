// Clang thread-safety annotations, and a Mutex / MutexLock / CondVar that
// carry them.
//
// Under Clang with -Wthread-safety the compiler checks that a field marked
// GUARDED_BY(mu_) is only touched with mu_ held, that a REQUIRES(mu_) method
// is only called with it held, and that EXCLUDES(mu_) ones are called without.
// Under GCC the macros expand to nothing. Mutex is a std::mutex with the
// capability attribute (no extra cost); CondVar waits on it through
// std::condition_variable (not condition_variable_any, which costs an extra
// mutex and allocation per wait). Lambdas are analysed as functions of their
// own: give a wait predicate that reads guarded fields REQUIRES(mu_).
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>

#if defined(__clang__)
#define FLEET_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define FLEET_THREAD_ANNOTATION(x)
#endif

#define CAPABILITY(x) FLEET_THREAD_ANNOTATION(capability(x))
#define SCOPED_CAPABILITY FLEET_THREAD_ANNOTATION(scoped_lockable)
#define GUARDED_BY(x) FLEET_THREAD_ANNOTATION(guarded_by(x))
#define PT_GUARDED_BY(x) FLEET_THREAD_ANNOTATION(pt_guarded_by(x))
#define ACQUIRED_BEFORE(...) FLEET_THREAD_ANNOTATION(acquired_before(__VA_ARGS__))
#define ACQUIRED_AFTER(...) FLEET_THREAD_ANNOTATION(acquired_after(__VA_ARGS__))
#define REQUIRES(...) FLEET_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
#define ACQUIRE(...) FLEET_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#define RELEASE(...) FLEET_THREAD_ANNOTATION(release_capability(__VA_ARGS__))
#define TRY_ACQUIRE(...) FLEET_THREAD_ANNOTATION(try_acquire_capability(__VA_ARGS__))
#define EXCLUDES(...) FLEET_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))
#define ASSERT_CAPABILITY(x) FLEET_THREAD_ANNOTATION(assert_capability(x))
#define RETURN_CAPABILITY(x) FLEET_THREAD_ANNOTATION(lock_returned(x))
#define NO_THREAD_SAFETY_ANALYSIS FLEET_THREAD_ANNOTATION(no_thread_safety_analysis)

namespace fleet {

// A std::mutex the analysis knows about. Not recursive.
class CAPABILITY("mutex") Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void lock() ACQUIRE() { mu_.lock(); }
  void unlock() RELEASE() { mu_.unlock(); }
  bool try_lock() TRY_ACQUIRE(true) { return mu_.try_lock(); }
  // Tells the analysis the caller holds this mutex (checked nowhere else).
  void AssertHeld() const ASSERT_CAPABILITY(this) {}

 private:
  friend class CondVar;
  friend class MutexLock;
  std::mutex mu_;
};

// Holds a Mutex for its scope; Unlock/Lock let a scope drop it for a while
// (to call out, or to write to a socket) and take it back.
class SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ACQUIRE(mu) : lk_(mu->mu_) {}
  ~MutexLock() RELEASE() = default;
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

  void Unlock() RELEASE() { lk_.unlock(); }
  void Lock() ACQUIRE() { lk_.lock(); }

 private:
  friend class CondVar;
  std::unique_lock<std::mutex> lk_;
};

// A condition variable used with a MutexLock on a Mutex.
class CondVar {
 public:
  void NotifyOne() { cv_.notify_one(); }
  void NotifyAll() { cv_.notify_all(); }
  // Blocks until pred() (evaluated with the mutex held) is true.
  template <typename Pred>
  void Wait(MutexLock& lk, Pred pred) {
    cv_.wait(lk.lk_, std::move(pred));
  }
  // As Wait; false if `timeout` passed with pred() still false.
  template <typename Rep, typename Period, typename Pred>
  bool WaitFor(MutexLock& lk, std::chrono::duration<Rep, Period> timeout, Pred pred) {
    return cv_.wait_for(lk.lk_, timeout, std::move(pred));
  }

 private:
  std::condition_variable cv_;
};

}  // namespace fleet
