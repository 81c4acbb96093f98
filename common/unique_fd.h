// UniqueFd: owns a file descriptor and closes it when destroyed, like
// std::unique_ptr does for memory. Move-only; -1 means none.
#ifndef SIDECAR_COMMON_UNIQUE_FD_H_
#define SIDECAR_COMMON_UNIQUE_FD_H_

#include <unistd.h>

#include <utility>

namespace sidecar {

class UniqueFd {
 public:
  UniqueFd() = default;
  // Takes ownership of `fd` (-1 or any negative value: none).
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { reset(); }

  UniqueFd(UniqueFd&& o) noexcept : fd_(o.release()) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) reset(o.release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  // The descriptor, still owned; negative if none.
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }

  // Gives up ownership without closing; returns the descriptor.
  int release() { return std::exchange(fd_, -1); }

  // Closes the descriptor held (errors from close are ignored) and takes
  // `fd` instead.
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

}  // namespace sidecar

#endif  // SIDECAR_COMMON_UNIQUE_FD_H_
