// Early returns on error, for functions that return absl::Status or
// absl::StatusOr<T> (not grpc::Status: convert with ToGrpcStatus at the
// service boundary).
//
//   absl::Status Save(...) {
//     SC_RETURN_IF_ERROR(conn->Prepare("get", "SELECT v FROM t WHERE k = $1"));
//     SC_ASSIGN_OR_RETURN(pg::Result r, conn->ExecPrepared("get", params));
//     ...
//   }
//
// SC_ASSIGN_OR_RETURN declares or assigns `lhs` from the value of a
// StatusOr, or returns its status. It expands to several statements: use it
// only where a statement may stand, never as the only statement of an
// unbraced if or loop.
#ifndef SIDECAR_COMMON_STATUS_MACROS_H_
#define SIDECAR_COMMON_STATUS_MACROS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// Evaluates `expr` (an absl::Status) once and returns it if it is an error.
#define SC_RETURN_IF_ERROR(expr)                                  \
  do {                                                            \
    if (::absl::Status sc_status_ = (expr); !sc_status_.ok()) {   \
      return sc_status_;                                          \
    }                                                             \
  } while (false)

// `lhs = *expr` if `expr` (an absl::StatusOr) holds a value, else returns
// its status. `lhs` may declare a variable: SC_ASSIGN_OR_RETURN(auto x, F()).
#define SC_ASSIGN_OR_RETURN(lhs, expr)                                   \
  SC_ASSIGN_OR_RETURN_IMPL_(SC_STATUS_MACROS_CONCAT_(sc_statusor_, __LINE__), \
                            lhs, expr)

// Details.
#define SC_STATUS_MACROS_CONCAT_INNER_(a, b) a##b
#define SC_STATUS_MACROS_CONCAT_(a, b) SC_STATUS_MACROS_CONCAT_INNER_(a, b)
#define SC_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                              \
  if (!tmp.ok()) return std::move(tmp).status();  \
  lhs = std::move(tmp).value()

#endif  // SIDECAR_COMMON_STATUS_MACROS_H_
