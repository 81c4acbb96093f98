// OrderedWriteReactor: grpc::ServerWriteReactor that tells ThreadSanitizer
// how gRPC orders a call's operations and reactions.
//
// gRPC guarantees that a reaction (OnWriteDone, OnCancel, OnDone) runs after
// the operation it answers was started, and that OnDone runs after every
// other reaction has returned. Its core keeps that order with lock-free
// queues and atomics in libgrpc, which is not built with ThreadSanitizer, so
// the tool sees none of it: every field a reactor sets before StartWrite and
// reads again in OnWriteDone (on another thread) looks like a data race, and
// so does OnDone deleting the reactor. This base marks those orderings
// (__tsan_release before each operation starts and as each reaction ends,
// __tsan_acquire as each reaction begins), so the races ThreadSanitizer
// still reports in reactors are real ones. In other builds the marks
// compile to nothing.
//
// Usage: derive from OrderedWriteReactor<Response> instead of
// grpc::ServerWriteReactor<Response>; call StartWrite / StartWriteAndFinish /
// Finish as usual (these shadow gRPC's); begin each reaction override with
// `Reaction r(this);` (OnDone with `ReactionDone(this);`, as it may delete
// the reactor); call PublishConstruction() last in the constructor.
#ifndef SIDECAR_COMMON_ORDERED_REACTOR_H_
#define SIDECAR_COMMON_ORDERED_REACTOR_H_

#include <grpcpp/grpcpp.h>

#include <utility>

#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SIDECAR_TSAN_ANNOTATIONS 1
extern "C" void __tsan_acquire(void* addr);
extern "C" void __tsan_release(void* addr);
#endif
#endif

namespace sidecar {

namespace internal {
inline void HappensBefore(const void* key) {
#ifdef SIDECAR_TSAN_ANNOTATIONS
  __tsan_release(const_cast<void*>(key));
#else
  (void)key;
#endif
}
inline void HappensAfter(const void* key) {
#ifdef SIDECAR_TSAN_ANNOTATIONS
  __tsan_acquire(const_cast<void*>(key));
#else
  (void)key;
#endif
}
}  // namespace internal

template <typename Response>
class OrderedWriteReactor : public grpc::ServerWriteReactor<Response> {
 protected:
  using Base = grpc::ServerWriteReactor<Response>;

  // Marks the start and end of a reaction (scoped).
  class Reaction {
   public:
    explicit Reaction(const OrderedWriteReactor* r) : r_(r) {
      internal::HappensAfter(r_);
    }
    ~Reaction() { internal::HappensBefore(r_); }
    Reaction(const Reaction&) = delete;
    Reaction& operator=(const Reaction&) = delete;

   private:
    const OrderedWriteReactor* const r_;
  };
  // Marks the start of OnDone, after which the reactor may be deleted.
  static void ReactionDone(const OrderedWriteReactor* r) {
    internal::HappensAfter(r);
  }
  // What the constructor set happens before any reaction.
  void PublishConstruction() const { internal::HappensBefore(this); }

  void StartWrite(const Response* resp) {
    internal::HappensBefore(this);
    Base::StartWrite(resp);
  }
  void StartWrite(const Response* resp, grpc::WriteOptions options) {
    internal::HappensBefore(this);
    Base::StartWrite(resp, std::move(options));
  }
  void StartWriteAndFinish(const Response* resp, grpc::WriteOptions options,
                           grpc::Status s) {
    internal::HappensBefore(this);
    Base::StartWriteAndFinish(resp, std::move(options), std::move(s));
  }
  void Finish(grpc::Status s) {
    internal::HappensBefore(this);
    Base::Finish(std::move(s));
  }
};

}  // namespace sidecar

#endif  // SIDECAR_COMMON_ORDERED_REACTOR_H_
