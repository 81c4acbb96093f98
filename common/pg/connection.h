// A small libpq layer: RAII handles, one connection with remembered prepared
// statements, automatic reconnect after the server restarts, a bounded
// transaction-retry helper and streaming reads.
//
//   SC_ASSIGN_OR_RETURN(auto conn,
//                       pg::Connection::Open("host=... dbname=..."));
//   SC_RETURN_IF_ERROR(conn->Prepare("get", "SELECT v FROM t WHERE k = $1"));
//   absl::StatusOr<pg::Result> r = conn->ExecPrepared("get", {"key"});
//
// Errors: every failed statement becomes an absl::Status whose message holds
// the SQLSTATE and the server's message; the SQLSTATE is also attached as a
// payload (see SqlState()). Losing the connection (socket closed, SQLSTATE
// class 08, 57P01..57P03) is UNAVAILABLE, and only that is; see
// IsConnectionLoss().
#ifndef SIDECAR_COMMON_PG_CONNECTION_H_
#define SIDECAR_COMMON_PG_CONNECTION_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

typedef struct pg_conn PGconn;
typedef struct pg_result PGresult;

namespace sidecar::pg {

struct PGconnDeleter {
  void operator()(PGconn* conn) const;
};
struct PGresultDeleter {
  void operator()(PGresult* result) const;
};
using ConnHandle = std::unique_ptr<PGconn, PGconnDeleter>;
using ResultHandle = std::unique_ptr<PGresult, PGresultDeleter>;

// A text-format statement parameter; nullopt is SQL NULL.
using Param = std::optional<std::string>;
using Params = std::vector<Param>;

// The SQLSTATE attached to a status returned by this layer ("23505"), or ""
// if there is none (e.g. the socket was closed without an error message).
std::string SqlState(const absl::Status& status);
// True iff `status` says the connection to the server was lost or could not
// be made (UNAVAILABLE from this layer). Such a statement may be retried on
// a new connection; whether it took effect is unknown if it was a COMMIT.
bool IsConnectionLoss(const absl::Status& status);

// Maps an SQLSTATE to a status code: class 08 and 57P01..57P03 UNAVAILABLE,
// 40001/40P01 ABORTED, 23505 ALREADY_EXISTS, other class 23
// FAILED_PRECONDITION, class 22 INVALID_ARGUMENT, 57014 CANCELLED, class 53
// RESOURCE_EXHAUSTED, everything else INTERNAL.
absl::StatusCode CodeForSqlState(absl::string_view sqlstate);

// A completed result (PGRES_COMMAND_OK, PGRES_TUPLES_OK or one row of
// PGRES_SINGLE_TUPLE). Values are in text format. Movable, not copyable.
class Result {
 public:
  explicit Result(ResultHandle result);

  int rows() const;
  int columns() const;
  // Column number of `name`, or -1.
  int ColumnIndex(const char* name) const;
  bool IsNull(int row, int col) const;
  // The text value; empty for NULL. Valid while this Result lives.
  // REQUIRES: 0 <= row < rows(), 0 <= col < columns().
  absl::string_view Get(int row, int col) const;
  // Parses the value as a decimal integer. INTERNAL if NULL or malformed.
  absl::StatusOr<int64_t> GetInt64(int row, int col) const;
  // "t"/"f" as bool. INTERNAL if NULL or malformed.
  absl::StatusOr<bool> GetBool(int row, int col) const;
  // Decodes a bytea value in hex output format ("\x0a1b..."). INTERNAL if
  // NULL or malformed.
  absl::StatusOr<std::string> GetBytea(int row, int col) const;
  // Rows affected by INSERT/UPDATE/DELETE/MERGE... (PQcmdTuples), else 0.
  uint64_t affected_rows() const;

  PGresult* get() const { return result_.get(); }

 private:
  ResultHandle result_;
};

// Builds the text form of a one-dimensional array parameter, e.g. for
// `unnest($1::text[])`. Every element is quoted, so any text is safe.
//
//   ArrayBuilder b; b.Add("a,b"); b.AddNull(); Param p = b.Finish();
class ArrayBuilder {
 public:
  ArrayBuilder();
  void Reserve(size_t bytes) { text_.reserve(bytes); }
  void Add(absl::string_view element);
  void AddInt(int64_t element);
  void AddBool(bool element) { Add(element ? "t" : "f"); }
  void AddNull();
  size_t size() const { return count_; }
  // Returns "{...}" and leaves the builder empty.
  std::string Finish();

 private:
  std::string text_;
  size_t count_ = 0;
};

struct ConnectOptions {
  // Open() keeps trying (with backoff) until this much time has passed.
  absl::Duration connect_timeout = absl::Seconds(10);
  // One connection attempt (TCP connect + startup) gives up after this.
  absl::Duration attempt_timeout = absl::Seconds(5);
  // Backoff between failed attempts: doubles from initial to max, +-25%.
  absl::Duration initial_backoff = absl::Milliseconds(20);
  absl::Duration max_backoff = absl::Milliseconds(500);
  // At most this many attempts per Open()/Reconnect(); 0 means no limit
  // other than the deadline.
  int max_attempts = 0;
  // Run after every (re)connect, before prepared statements are re-made,
  // e.g. "SET statement_timeout = '30s'".
  std::vector<std::string> session_sql;
  std::string application_name = "sidecar";
};

// One server connection. Not thread-safe: callers serialize access.
class Connection {
 public:
  // Connects to `conninfo` (libpq key=value or URI form), retrying with
  // backoff until options.connect_timeout. UNAVAILABLE with libpq's last
  // message if it never succeeds; INVALID_ARGUMENT if conninfo is malformed.
  static absl::StatusOr<std::unique_ptr<Connection>> Open(
      const std::string& conninfo, const ConnectOptions& options = {});

  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Runs one or more ';'-separated statements without parameters. Returns
  // the last statement's result.
  absl::StatusOr<Result> Exec(absl::string_view sql);
  // Runs one statement with text parameters $1..$n.
  absl::StatusOr<Result> ExecParams(absl::string_view sql,
                                    const Params& params);

  // Prepares `sql` as `name` and remembers it, so that it is prepared again
  // on every new connection. Preparing an existing name with the same sql
  // is a no-op; with different sql, FAILED_PRECONDITION.
  absl::Status Prepare(const std::string& name, const std::string& sql);
  // Runs a statement made by Prepare(). NOT_FOUND if `name` is unknown.
  absl::StatusOr<Result> ExecPrepared(const std::string& name,
                                      const Params& params);

  // Callback of the streaming reads: one row of `result` (row index `row`).
  // Returning an error stops the stream and is returned as is.
  using RowFn = std::function<absl::Status(const Result& result, int row)>;
  // Runs a query and passes each row to `fn` as it arrives, in single-row
  // mode: memory stays constant however many rows there are. If `fn` fails,
  // the rest of the result is discarded and the error returned.
  absl::Status StreamParams(absl::string_view sql, const Params& params,
                            const RowFn& fn);
  // Same through a cursor fetched `batch_rows` at a time; fewer allocations
  // than single-row mode for millions of small rows. Uses the current
  // transaction if one is open (the cursor is closed at the end), else
  // opens and commits its own. If `fn` fails inside a caller's transaction,
  // the cursor stays open until that transaction ends.
  absl::Status StreamCursor(absl::string_view sql, const Params& params,
                            int batch_rows, const RowFn& fn);

  // Callback of CopyOutBinary: the fields of one row, each a value in
  // PostgreSQL's binary send format (network byte order), nullopt for NULL.
  // Valid only during the call.
  using BinaryRowFn = std::function<absl::Status(
      absl::Span<const std::optional<absl::string_view>> fields)>;
  // Runs `COPY (query) TO STDOUT (FORMAT binary)` and passes each row to
  // `fn` as it arrives: no text parsing, and rows are handled while the
  // server still produces the next ones. If `fn` fails, the rest is
  // discarded and its error returned. INTERNAL if the stream is malformed.
  absl::Status CopyOutBinary(absl::string_view query, const BinaryRowFn& fn);

  // Runs `fn` inside BEGIN ... COMMIT. If `fn` fails, rolls back and returns
  // its error. If the connection is lost at any point, reconnects and runs
  // the whole transaction again, until `retry_timeout` has passed since the
  // call; then UNAVAILABLE saying what to check. `attempt` counts from 0; a
  // retry after a lost COMMIT may find the first attempt's effects (the
  // commit outcome is unknown), so `fn` must be idempotent or use `attempt`
  // to cope. `fn` must reset any output it fills, as it may run again.
  absl::Status RunTransaction(
      absl::Duration retry_timeout,
      const std::function<absl::Status(Connection& conn, int attempt)>& fn);
  // The same without BEGIN/COMMIT, for idempotent reads and single
  // statements.
  absl::Status RunWithRetry(
      absl::Duration retry_timeout,
      const std::function<absl::Status(Connection& conn, int attempt)>& fn);

  // Replaces the connection with a new one (with backoff, until `deadline`
  // or options.max_attempts) and prepares the remembered statements again.
  absl::Status Reconnect(absl::Time deadline);
  // True iff the connection is known to be unusable. The next statement
  // then reconnects first (one attempt); session state such as an open
  // transaction, advisory locks or SET values is gone, so after a statement
  // fails with connection loss, abandon the unit of work (RunTransaction
  // does this).
  bool broken() const;
  // Host and port as libpq reports them, for messages.
  std::string Describe() const;
  // Number of successful reconnects since Open (for tests and metrics).
  int reconnects() const { return reconnects_; }

  // The raw connection, for libpq calls this class lacks. Do not close it.
  PGconn* raw() const { return conn_.get(); }

 private:
  Connection(std::string conninfo, ConnectOptions options);

  // Connects once, giving up at `deadline`.
  absl::StatusOr<ConnHandle> ConnectOnce(absl::Time deadline) const;
  // Reconnects if the connection is known to be broken. Nothing has been
  // sent then, so this is safe before any statement.
  absl::Status EnsureConnected();
  // Turns a finished PGresult into a Result or a status.
  absl::StatusOr<Result> Check(ResultHandle result, const std::string& what);
  absl::Status ErrorFromConnection(const std::string& what);
  absl::Status SetUpSession();
  absl::Status RunRetrying(
      bool transaction, absl::Duration retry_timeout,
      const std::function<absl::Status(Connection&, int)>& fn);

  const std::string conninfo_;
  const ConnectOptions options_;
  ConnHandle conn_;
  bool broken_ = false;
  int reconnects_ = 0;
  // name -> sql, in the order prepared.
  std::vector<std::pair<std::string, std::string>> statements_;
  absl::flat_hash_map<std::string, size_t> statement_index_;
};

// Quotes an identifier for SQL ("my db" -> "\"my db\"").
std::string QuoteIdentifier(absl::string_view name);

// Runs the prepared statement `name` (retrying after a lost connection, as
// RunWithRetry) and maps every row with `from_row`, a callable
// (const Result&, int row) -> absl::StatusOr<T>.
template <typename T, typename FromRow>
absl::StatusOr<std::vector<T>> QueryPrepared(Connection& conn,
                                             absl::Duration retry_timeout,
                                             const std::string& name,
                                             const Params& params,
                                             FromRow from_row) {
  std::vector<T> out;
  absl::Status s = conn.RunWithRetry(
      retry_timeout, [&](Connection& c, int) -> absl::Status {
        out.clear();
        absl::StatusOr<Result> r = c.ExecPrepared(name, params);
        if (!r.ok()) return r.status();
        out.reserve(r->rows());
        for (int row = 0; row < r->rows(); ++row) {
          absl::StatusOr<T> item = from_row(*r, row);
          if (!item.ok()) return item.status();
          out.push_back(std::move(*item));
        }
        return absl::OkStatus();
      });
  if (!s.ok()) return s;
  return out;
}

}  // namespace sidecar::pg

#endif  // SIDECAR_COMMON_PG_CONNECTION_H_
