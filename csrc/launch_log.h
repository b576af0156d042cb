// A record of the kernel variants the host code launched, so that a test can
// assert that a case ran the kernel it names and not a silent fallback (the
// thread forward strategy hands problems it does not serve to the warp one).
//
// Each entry is "<source file>: <launching function>", the function as the
// compiler's __PRETTY_FUNCTION__ spells it: its template arguments name the
// variant (scalar type, activation, statistics set, register or shared-memory
// path, ...). Off unless enabled; a launch then costs one relaxed load.
#pragma once

#include <atomic>
#include <mutex>
#include <string>
#include <vector>

namespace fastdice {

class LaunchLog {
 public:
  static LaunchLog& instance() {
    static LaunchLog log;
    return log;
  }

  void record(const char* file, const char* launcher) {
    if (!enabled_.load(std::memory_order_relaxed)) return;
    std::string entry(file);
    const size_t slash = entry.find_last_of('/');
    if (slash != std::string::npos) entry.erase(0, slash + 1);
    entry += ": ";
    entry += launcher;
    const std::lock_guard<std::mutex> lock(mutex_);
    entries_.push_back(std::move(entry));
  }

  // The entries since the last call; recording continues only if `enable`.
  std::vector<std::string> take(bool enable) {
    const std::lock_guard<std::mutex> lock(mutex_);
    std::vector<std::string> out;
    out.swap(entries_);
    enabled_.store(enable, std::memory_order_relaxed);
    return out;
  }

 private:
  std::atomic<bool> enabled_{false};
  std::mutex mutex_;
  std::vector<std::string> entries_;
};

}  // namespace fastdice
