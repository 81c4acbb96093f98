// Preloaded into the processes of the ThreadSanitizer test run
// (scripts/test-sanitized.sh tsan sets LD_PRELOAD): tells ThreadSanitizer how
// libgrpc orders a call's operations and their completions.
//
// gRPC's C++ API is header code compiled into our objects. A completion tag
// (CallbackWithSuccessTag and the op sets) is filled by the thread that
// starts an operation and read by the thread that runs its completion. libgrpc
// orders the two with its own queues and atomics; it is Debian's build, not
// instrumented, so ThreadSanitizer sees none of it and reports the tag's
// std::function as a race. Every operation of the C++ API passes through two
// C functions of libgrpc, called across a shared-library boundary and so
// interposable here:
//   - grpc_call_start_batch, on the thread that starts an operation, after it
//     filled the tag: a release on the call;
//   - grpc_call_unref, which the op set's FinalizeResult calls on the
//     completion thread before it runs the tag's function: an acquire on the
//     call.
// This is coarser than gRPC's real order (any completion on a call is
// ordered after every operation started on it before), so it can hide a
// race only between accesses that are each next to a gRPC operation on the
// same call. Everything else is checked as before.
//
// Built without instrumentation (scripts/build-tsan.sh) and preloaded into
// every process of the run, postgres included: the ThreadSanitizer entry
// points are weak, and called only where the process has them.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>

typedef struct grpc_call grpc_call;
typedef struct grpc_op grpc_op;
typedef int grpc_call_error;

void __tsan_acquire(void* addr) __attribute__((weak));
void __tsan_release(void* addr) __attribute__((weak));

typedef grpc_call_error (*StartBatchFn)(grpc_call*, const grpc_op*, size_t,
                                        void*, void*);
typedef void (*UnrefFn)(grpc_call*);

grpc_call_error grpc_call_start_batch(grpc_call* call, const grpc_op* ops,
                                      size_t nops, void* tag, void* reserved) {
  static StartBatchFn next;
  StartBatchFn f = __atomic_load_n(&next, __ATOMIC_ACQUIRE);
  if (f == NULL) {  // threads that race here all find the same function
    f = (StartBatchFn)dlsym(RTLD_NEXT, "grpc_call_start_batch");
    __atomic_store_n(&next, f, __ATOMIC_RELEASE);
  }
  if (__tsan_release) __tsan_release(call);
  return f(call, ops, nops, tag, reserved);
}

void grpc_call_unref(grpc_call* call) {
  static UnrefFn next;
  UnrefFn f = __atomic_load_n(&next, __ATOMIC_ACQUIRE);
  if (f == NULL) {
    f = (UnrefFn)dlsym(RTLD_NEXT, "grpc_call_unref");
    __atomic_store_n(&next, f, __ATOMIC_RELEASE);
  }
  if (__tsan_acquire) __tsan_acquire(call);
  f(call);
}
