#include "common/pg/connection.h"

#include <libpq-fe.h>
#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/ascii.h"
#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/log.h"
#include "common/status_macros.h"

namespace sidecar::pg {
namespace {

constexpr absl::string_view kSqlStatePayload = "sidecar.pg/sqlstate";
constexpr absl::string_view kConnectionLossPayload = "sidecar.pg/connection";

absl::Status MakeError(absl::StatusCode code, std::string message,
                       absl::string_view sqlstate) {
  absl::Status status(code, message);
  if (!sqlstate.empty()) {
    status.SetPayload(kSqlStatePayload, absl::Cord(sqlstate));
  }
  if (code == absl::StatusCode::kUnavailable) {
    status.SetPayload(kConnectionLossPayload, absl::Cord("lost"));
  }
  return status;
}

bool IsConnectionLossState(absl::string_view sqlstate) {
  return absl::StartsWith(sqlstate, "08") || sqlstate == "57P01" ||
         sqlstate == "57P02" || sqlstate == "57P03";
}

// libpq's message without the trailing newline, on one line.
std::string Trimmed(const char* text) {
  if (text == nullptr) return std::string();
  std::string out(absl::StripAsciiWhitespace(text));
  for (char& c : out) {
    if (c == '\n' || c == '\t') c = ' ';
  }
  return out;
}

void NoticeToLog(void*, const char* message) {
  SC_LOG(DEBUG) << "postgres: " << Trimmed(message);
}

// Parallel arrays of C strings for libpq, borrowed from `params`.
struct ParamArrays {
  explicit ParamArrays(const Params& params) {
    values.reserve(params.size());
    for (const Param& p : params) {
      values.push_back(p.has_value() ? p->c_str() : nullptr);
    }
  }
  int count() const { return static_cast<int>(values.size()); }
  const char* const* data() const { return values.data(); }
  std::vector<const char*> values;
};

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string DescribeConninfo(const std::string& conninfo) {
  char* err = nullptr;
  PQconninfoOption* opts = PQconninfoParse(conninfo.c_str(), &err);
  if (opts == nullptr) {
    PQfreemem(err);
    return "(malformed conninfo)";
  }
  std::string host = "(default socket)", port = "5432", dbname;
  for (PQconninfoOption* o = opts; o->keyword != nullptr; ++o) {
    if (o->val == nullptr || *o->val == '\0') continue;
    absl::string_view k = o->keyword;
    if (k == "host" || (k == "hostaddr" && host == "(default socket)")) {
      host = o->val;
    } else if (k == "port") {
      port = o->val;
    } else if (k == "dbname") {
      dbname = o->val;
    }
  }
  PQconninfoFree(opts);
  return absl::StrCat(host, ":", port, dbname.empty() ? "" : "/", dbname);
}

}  // namespace

void PGconnDeleter::operator()(PGconn* conn) const { PQfinish(conn); }
void PGresultDeleter::operator()(PGresult* result) const { PQclear(result); }

std::string SqlState(const absl::Status& status) {
  auto p = status.GetPayload(kSqlStatePayload);
  return p.has_value() ? std::string(*p) : std::string();
}

bool IsConnectionLoss(const absl::Status& status) {
  return status.code() == absl::StatusCode::kUnavailable &&
         status.GetPayload(kConnectionLossPayload).has_value();
}

absl::StatusCode CodeForSqlState(absl::string_view sqlstate) {
  absl::string_view s = sqlstate;
  if (IsConnectionLossState(s)) return absl::StatusCode::kUnavailable;
  if (s == "40001" || s == "40P01") return absl::StatusCode::kAborted;
  if (s == "23505") return absl::StatusCode::kAlreadyExists;
  if (absl::StartsWith(s, "23")) return absl::StatusCode::kFailedPrecondition;
  if (absl::StartsWith(s, "22")) return absl::StatusCode::kInvalidArgument;
  if (s == "57014") return absl::StatusCode::kCancelled;
  if (absl::StartsWith(s, "53")) return absl::StatusCode::kResourceExhausted;
  return absl::StatusCode::kInternal;
}

std::string QuoteIdentifier(absl::string_view name) {
  std::string out = "\"";
  for (char c : name) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
  return out;
}

// ---------------------------------------------------------------- Result

Result::Result(ResultHandle result) : result_(std::move(result)) {}

int Result::rows() const { return PQntuples(result_.get()); }
int Result::columns() const { return PQnfields(result_.get()); }
int Result::ColumnIndex(const char* name) const {
  return PQfnumber(result_.get(), name);
}
bool Result::IsNull(int row, int col) const {
  return PQgetisnull(result_.get(), row, col) != 0;
}
absl::string_view Result::Get(int row, int col) const {
  return absl::string_view(PQgetvalue(result_.get(), row, col),
                           PQgetlength(result_.get(), row, col));
}

absl::StatusOr<int64_t> Result::GetInt64(int row, int col) const {
  if (IsNull(row, col)) {
    return absl::InternalError(
        absl::StrCat("column ", PQfname(result_.get(), col), " is NULL"));
  }
  absl::string_view v = Get(row, col);
  int64_t out = 0;
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
  if (ec != std::errc() || end != v.data() + v.size()) {
    return absl::InternalError(absl::StrCat("column ",
                                            PQfname(result_.get(), col),
                                            ": not an integer: \"", v, "\""));
  }
  return out;
}

absl::StatusOr<bool> Result::GetBool(int row, int col) const {
  absl::string_view v = Get(row, col);
  if (!IsNull(row, col) && (v == "t" || v == "f")) return v == "t";
  return absl::InternalError(absl::StrCat(
      "column ", PQfname(result_.get(), col), ": not a boolean: \"", v, "\""));
}

absl::StatusOr<std::string> Result::GetBytea(int row, int col) const {
  absl::string_view v = Get(row, col);
  if (IsNull(row, col) || v.size() < 2 || v[0] != '\\' || v[1] != 'x' ||
      v.size() % 2 != 0) {
    return absl::InternalError(absl::StrCat(
        "column ", PQfname(result_.get(), col),
        ": not a bytea in hex format (is bytea_output = 'escape'?)"));
  }
  std::string out;
  out.resize((v.size() - 2) / 2);
  for (size_t i = 0; i < out.size(); ++i) {
    int hi = HexValue(v[2 + 2 * i]), lo = HexValue(v[3 + 2 * i]);
    if (hi < 0 || lo < 0) {
      return absl::InternalError(absl::StrCat(
          "column ", PQfname(result_.get(), col), ": bad hex in bytea"));
    }
    out[i] = static_cast<char>(hi << 4 | lo);
  }
  return out;
}

uint64_t Result::affected_rows() const {
  const char* n = PQcmdTuples(result_.get());
  uint64_t out = 0;
  if (n != nullptr) std::from_chars(n, n + strlen(n), out);
  return out;
}

// ---------------------------------------------------------- ArrayBuilder

ArrayBuilder::ArrayBuilder() : text_("{") {}

void ArrayBuilder::Add(absl::string_view element) {
  if (count_++ > 0) text_ += ',';
  text_ += '"';
  for (char c : element) {
    if (c == '"' || c == '\\') text_ += '\\';
    text_ += c;
  }
  text_ += '"';
}

void ArrayBuilder::AddInt(int64_t element) {
  if (count_++ > 0) text_ += ',';
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), element);
  text_.append(buf, end);
}

void ArrayBuilder::AddNull() {
  if (count_++ > 0) text_ += ',';
  text_ += "NULL";
}

std::string ArrayBuilder::Finish() {
  text_ += '}';
  std::string out = std::move(text_);
  text_ = "{";
  count_ = 0;
  return out;
}

// ------------------------------------------------------------ Connection

Connection::Connection(std::string conninfo, ConnectOptions options)
    : conninfo_(std::move(conninfo)), options_(std::move(options)) {}

Connection::~Connection() = default;

absl::StatusOr<std::unique_ptr<Connection>> Connection::Open(
    const std::string& conninfo, const ConnectOptions& options) {
  char* err = nullptr;
  PQconninfoOption* parsed = PQconninfoParse(conninfo.c_str(), &err);
  if (parsed == nullptr) {
    std::string msg = Trimmed(err);
    PQfreemem(err);
    return absl::InvalidArgumentError(
        absl::StrCat("malformed PostgreSQL conninfo: ", msg));
  }
  PQconninfoFree(parsed);
  auto conn = std::unique_ptr<Connection>(new Connection(conninfo, options));
  SC_RETURN_IF_ERROR(conn->Reconnect(absl::Now() + options.connect_timeout));
  conn->reconnects_ = 0;
  return conn;
}

std::string Connection::Describe() const { return DescribeConninfo(conninfo_); }

bool Connection::broken() const {
  return broken_ || conn_ == nullptr || PQstatus(conn_.get()) == CONNECTION_BAD;
}

absl::StatusOr<ConnHandle> Connection::ConnectOnce(absl::Time deadline) const {
  const char* keywords[] = {"application_name", "dbname", nullptr};
  const char* values[] = {options_.application_name.c_str(), conninfo_.c_str(),
                          nullptr};
  ConnHandle conn(PQconnectStartParams(keywords, values, /*expand_dbname=*/1));
  if (conn == nullptr) return absl::ResourceExhaustedError("libpq: no memory");
  auto fail = [&](absl::string_view why) {
    return MakeError(
        absl::StatusCode::kUnavailable,
        absl::StrCat("cannot connect to PostgreSQL at ", Describe(), ": ", why),
        "08001");
  };
  PostgresPollingStatusType st = PGRES_POLLING_WRITING;
  if (PQstatus(conn.get()) == CONNECTION_BAD) st = PGRES_POLLING_FAILED;
  for (;;) {
    if (st == PGRES_POLLING_OK) break;
    if (st == PGRES_POLLING_FAILED) {
      return fail(Trimmed(PQerrorMessage(conn.get())));
    }
    int fd = PQsocket(conn.get());
    if (fd < 0) return fail("no socket");
    int64_t ms = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (ms <= 0) return fail("timed out");
    pollfd p{fd,
             static_cast<short>(st == PGRES_POLLING_READING ? POLLIN : POLLOUT),
             0};
    int r = poll(&p, 1, static_cast<int>(std::min<int64_t>(ms, 1 << 30)));
    if (r < 0 && errno != EINTR) return fail("poll failed");
    if (r == 0) return fail("timed out");
    st = PQconnectPoll(conn.get());
  }
  PQsetNoticeProcessor(conn.get(), &NoticeToLog, nullptr);
  return conn;
}

absl::Status Connection::SetUpSession() {
  for (const std::string& sql : options_.session_sql) {
    absl::StatusOr<Result> r = Exec(sql);
    if (!r.ok()) return r.status();
  }
  for (const auto& [name, sql] : statements_) {
    ResultHandle r(
        PQprepare(conn_.get(), name.c_str(), sql.c_str(), 0, nullptr));
    absl::StatusOr<Result> checked =
        Check(std::move(r), absl::StrCat("PREPARE ", name));
    if (!checked.ok()) return checked.status();
  }
  return absl::OkStatus();
}

absl::Status Connection::Reconnect(absl::Time deadline) {
  absl::Duration backoff = options_.initial_backoff;
  absl::BitGen rng;
  absl::Status last;
  for (int attempt = 1;; ++attempt) {
    absl::Time attempt_deadline =
        std::min(deadline, absl::Now() + options_.attempt_timeout);
    absl::StatusOr<ConnHandle> c = ConnectOnce(attempt_deadline);
    if (c.ok()) {
      conn_ = std::move(*c);
      broken_ = false;
      last = SetUpSession();
      if (last.ok()) {
        ++reconnects_;
        return absl::OkStatus();
      }
      if (!IsConnectionLoss(last)) return last;
    } else {
      last = c.status();
    }
    if (options_.max_attempts > 0 && attempt >= options_.max_attempts) break;
    absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) break;
    absl::Duration sleep = backoff * absl::Uniform(rng, 0.75, 1.25);
    absl::SleepFor(std::min(sleep, left));
    backoff = std::min(backoff * 2, options_.max_backoff);
    // Keep the last real error rather than a zero-length attempt's timeout.
    if (absl::Now() >= deadline) break;
  }
  broken_ = true;
  return last;
}

absl::Status Connection::EnsureConnected() {
  if (!broken()) return absl::OkStatus();
  // One attempt: callers that want to wait use RunWithRetry/RunTransaction.
  absl::Time deadline = absl::Now() + options_.attempt_timeout;
  absl::StatusOr<ConnHandle> c = ConnectOnce(deadline);
  if (!c.ok()) return c.status();
  conn_ = std::move(*c);
  broken_ = false;
  absl::Status s = SetUpSession();
  if (s.ok()) ++reconnects_;
  return s;
}

absl::Status Connection::ErrorFromConnection(const std::string& what) {
  std::string msg = conn_ ? Trimmed(PQerrorMessage(conn_.get())) : "";
  if (conn_ == nullptr || PQstatus(conn_.get()) == CONNECTION_BAD) {
    broken_ = true;
    return MakeError(absl::StatusCode::kUnavailable,
                     absl::StrCat(what, ": lost connection to PostgreSQL at ",
                                  Describe(), ": ", msg),
                     "08006");
  }
  return MakeError(absl::StatusCode::kInternal, absl::StrCat(what, ": ", msg),
                   "");
}

absl::StatusOr<Result> Connection::Check(ResultHandle result,
                                         const std::string& what) {
  if (result == nullptr) return ErrorFromConnection(what);
  switch (PQresultStatus(result.get())) {
    case PGRES_COMMAND_OK:
    case PGRES_TUPLES_OK:
    case PGRES_SINGLE_TUPLE:
    case PGRES_EMPTY_QUERY:
      return Result(std::move(result));
    default:
      break;
  }
  const char* state = PQresultErrorField(result.get(), PG_DIAG_SQLSTATE);
  std::string sqlstate = state ? state : "";
  std::string primary =
      Trimmed(PQresultErrorField(result.get(), PG_DIAG_MESSAGE_PRIMARY));
  if (primary.empty()) primary = Trimmed(PQresultErrorMessage(result.get()));
  if (primary.empty() && conn_) primary = Trimmed(PQerrorMessage(conn_.get()));
  std::string detail =
      Trimmed(PQresultErrorField(result.get(), PG_DIAG_MESSAGE_DETAIL));
  std::string hint =
      Trimmed(PQresultErrorField(result.get(), PG_DIAG_MESSAGE_HINT));
  bool lost = IsConnectionLossState(sqlstate) || conn_ == nullptr ||
              PQstatus(conn_.get()) == CONNECTION_BAD;
  if (lost) broken_ = true;
  absl::StatusCode code =
      lost ? absl::StatusCode::kUnavailable : CodeForSqlState(sqlstate);
  std::string msg =
      absl::StrCat(what, " failed: ",
                   sqlstate.empty() ? std::string("(no SQLSTATE)")
                                    : absl::StrCat("SQLSTATE ", sqlstate),
                   ": ", primary);
  if (!detail.empty()) absl::StrAppend(&msg, " (detail: ", detail, ")");
  if (!hint.empty()) absl::StrAppend(&msg, " (hint: ", hint, ")");
  if (lost) absl::StrAppend(&msg, " [PostgreSQL at ", Describe(), "]");
  return MakeError(code, std::move(msg), sqlstate);
}

namespace {
std::string StatementName(absl::string_view text) {
  absl::string_view sql = absl::StripLeadingAsciiWhitespace(text);
  size_t n = std::min<size_t>(sql.size(), 60);
  std::string out(sql.substr(0, n));
  for (char& c : out) {
    if (c == '\n' || c == '\t') c = ' ';
  }
  if (n < sql.size()) out += "...";
  return absl::StrCat("\"", out, "\"");
}
}  // namespace

absl::StatusOr<Result> Connection::Exec(absl::string_view sql) {
  SC_RETURN_IF_ERROR(EnsureConnected());
  std::string text(sql);
  return Check(ResultHandle(PQexec(conn_.get(), text.c_str())),
               StatementName(sql));
}

absl::StatusOr<Result> Connection::ExecParams(absl::string_view sql,
                                              const Params& params) {
  SC_RETURN_IF_ERROR(EnsureConnected());
  std::string text(sql);
  ParamArrays arrays(params);
  return Check(
      ResultHandle(PQexecParams(conn_.get(), text.c_str(), arrays.count(),
                                nullptr, arrays.data(), nullptr, nullptr, 0)),
      StatementName(sql));
}

absl::Status Connection::Prepare(const std::string& name,
                                 const std::string& sql) {
  auto it = statement_index_.find(name);
  if (it != statement_index_.end()) {
    if (statements_[it->second].second == sql) return absl::OkStatus();
    return absl::FailedPreconditionError(absl::StrCat(
        "prepared statement \"", name, "\" already exists with other SQL"));
  }
  SC_RETURN_IF_ERROR(EnsureConnected());
  absl::StatusOr<Result> r =
      Check(ResultHandle(
                PQprepare(conn_.get(), name.c_str(), sql.c_str(), 0, nullptr)),
            absl::StrCat("PREPARE ", name));
  // Remember it also when the connection dropped: the reconnect prepares it.
  if (r.ok() || IsConnectionLoss(r.status())) {
    statement_index_[name] = statements_.size();
    statements_.emplace_back(name, sql);
  }
  return r.status();
}

absl::StatusOr<Result> Connection::ExecPrepared(const std::string& name,
                                                const Params& params) {
  if (!statement_index_.contains(name)) {
    return absl::NotFoundError(
        absl::StrCat("no prepared statement \"", name, "\"; Prepare() it"));
  }
  SC_RETURN_IF_ERROR(EnsureConnected());
  ParamArrays arrays(params);
  return Check(
      ResultHandle(PQexecPrepared(conn_.get(), name.c_str(), arrays.count(),
                                  arrays.data(), nullptr, nullptr, 0)),
      absl::StrCat("EXECUTE ", name));
}

absl::Status Connection::StreamParams(absl::string_view sql,
                                      const Params& params, const RowFn& fn) {
  SC_RETURN_IF_ERROR(EnsureConnected());
  std::string text(sql);
  ParamArrays arrays(params);
  std::string what = StatementName(sql);
  if (!PQsendQueryParams(conn_.get(), text.c_str(), arrays.count(), nullptr,
                         arrays.data(), nullptr, nullptr, 0)) {
    return ErrorFromConnection(what);
  }
  PQsetSingleRowMode(conn_.get());  // if refused, rows come all at once
  absl::Status fn_status, query_status;
  bool cancelled = false;
  while (PGresult* raw_result = PQgetResult(conn_.get())) {
    ResultHandle handle(raw_result);
    ExecStatusType st = PQresultStatus(handle.get());
    if (st == PGRES_SINGLE_TUPLE || st == PGRES_TUPLES_OK) {
      if (!fn_status.ok()) continue;
      Result result(std::move(handle));
      for (int row = 0; row < result.rows() && fn_status.ok(); ++row) {
        fn_status = fn(result, row);
      }
      if (!fn_status.ok() && !cancelled) {
        // Ask the server to stop sending; the remaining rows are drained.
        cancelled = true;
        if (PGcancel* cancel = PQgetCancel(conn_.get())) {
          char err[256];
          PQcancel(cancel, err, sizeof(err));
          PQfreeCancel(cancel);
        }
      }
      continue;
    }
    absl::StatusOr<Result> checked = Check(std::move(handle), what);
    if (!checked.ok() && query_status.ok()) query_status = checked.status();
  }
  if (!fn_status.ok()) return fn_status;
  if (!query_status.ok()) return query_status;
  if (PQstatus(conn_.get()) == CONNECTION_BAD) return ErrorFromConnection(what);
  return absl::OkStatus();
}

absl::Status Connection::StreamCursor(absl::string_view sql,
                                      const Params& params, int batch_rows,
                                      const RowFn& fn) {
  SC_RETURN_IF_ERROR(EnsureConnected());
  PGTransactionStatusType txn = PQtransactionStatus(conn_.get());
  if (txn != PQTRANS_IDLE && txn != PQTRANS_INTRANS) {
    return absl::FailedPreconditionError(
        "StreamCursor called in a failed or busy transaction");
  }
  const bool own_transaction = txn == PQTRANS_IDLE;
  batch_rows = std::max(batch_rows, 1);
  absl::Status s = own_transaction ? Exec("BEGIN").status() : absl::OkStatus();
  if (s.ok()) {
    s = ExecParams(
            absl::StrCat("DECLARE sidecar_stream NO SCROLL CURSOR FOR ", sql),
            params)
            .status();
  }
  const std::string fetch =
      absl::StrCat("FETCH FORWARD ", batch_rows, " FROM sidecar_stream");
  while (s.ok()) {
    absl::StatusOr<Result> r = Exec(fetch);
    if (!r.ok()) {
      s = r.status();
      break;
    }
    for (int row = 0; row < r->rows() && s.ok(); ++row) s = fn(*r, row);
    if (r->rows() < batch_rows) break;
  }
  if (s.ok()) {
    s = Exec(own_transaction ? "COMMIT" : "CLOSE sidecar_stream").status();
  }
  if (!s.ok() && own_transaction && !broken()) (void)Exec("ROLLBACK");
  return s;
}

namespace {

uint32_t ReadBigEndian32(const char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return __builtin_bswap32(v);
}

// Splits one message of a binary COPY into fields. Each message holds one
// row; the first also starts with the file header, the last may be the
// trailer (field count -1). Sets *end at the trailer.
absl::Status SplitBinaryRow(
    absl::string_view msg, bool* header_seen, bool* end,
    std::vector<std::optional<absl::string_view>>* out) {
  static constexpr char kSignature[] = "PGCOPY\n\377\r\n";  // + '\0'
  out->clear();
  if (!*header_seen) {
    if (msg.size() < 19 || std::memcmp(msg.data(), kSignature, 11) != 0) {
      return absl::InternalError("binary COPY without its header");
    }
    const uint32_t extension = ReadBigEndian32(msg.data() + 15);
    if (msg.size() < 19 + size_t{extension}) {
      return absl::InternalError("binary COPY header is cut short");
    }
    msg.remove_prefix(19 + extension);
    *header_seen = true;
    if (msg.empty()) return absl::OkStatus();
  }
  if (msg.size() < 2) return absl::InternalError("binary COPY row cut short");
  const int16_t count =
      static_cast<int16_t>(uint16_t(uint8_t(msg[0])) << 8 | uint8_t(msg[1]));
  msg.remove_prefix(2);
  if (count == -1) {
    *end = true;
    return absl::OkStatus();
  }
  for (int16_t i = 0; i < count; ++i) {
    if (msg.size() < 4) return absl::InternalError("binary COPY row cut short");
    const int32_t len = static_cast<int32_t>(ReadBigEndian32(msg.data()));
    msg.remove_prefix(4);
    if (len == -1) {
      out->push_back(std::nullopt);
      continue;
    }
    if (len < 0 || msg.size() < static_cast<size_t>(len)) {
      return absl::InternalError("binary COPY field cut short");
    }
    out->push_back(msg.substr(0, len));
    msg.remove_prefix(len);
  }
  if (!msg.empty()) {
    return absl::InternalError("binary COPY message holds more than one row");
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status Connection::CopyOutBinary(absl::string_view query,
                                       const BinaryRowFn& fn) {
  SC_RETURN_IF_ERROR(EnsureConnected());
  const std::string sql =
      absl::StrCat("COPY (", query, ") TO STDOUT (FORMAT binary)");
  const std::string what = StatementName(sql);
  if (!PQsendQuery(conn_.get(), sql.c_str())) return ErrorFromConnection(what);
  absl::Status status;
  ResultHandle first(PQgetResult(conn_.get()));
  if (first == nullptr || PQresultStatus(first.get()) != PGRES_COPY_OUT) {
    status = Check(std::move(first), what).status();
    while (PGresult* r = PQgetResult(conn_.get())) PQclear(r);
    return status.ok() ? absl::InternalError("COPY did not start") : status;
  }
  bool header_seen = false, end = false;
  std::vector<std::optional<absl::string_view>> fields;
  char* buf = nullptr;
  int len;
  while ((len = PQgetCopyData(conn_.get(), &buf, 0)) > 0) {
    if (status.ok()) {
      status = SplitBinaryRow(absl::string_view(buf, len), &header_seen, &end,
                              &fields);
      if (status.ok() && !fields.empty()) status = fn(fields);
    }
    PQfreemem(buf);
    // After a failure the rest is read and dropped: cheaper than a cancel
    // for what LoadAdvertised reads, and the connection stays usable.
  }
  absl::Status query_status;
  while (PGresult* raw_result = PQgetResult(conn_.get())) {
    absl::StatusOr<Result> checked = Check(ResultHandle(raw_result), what);
    if (!checked.ok() && query_status.ok()) query_status = checked.status();
  }
  if (!status.ok()) return status;
  if (!query_status.ok()) return query_status;
  if (len == -2 || PQstatus(conn_.get()) == CONNECTION_BAD) {
    return ErrorFromConnection(what);
  }
  return absl::OkStatus();
}

absl::Status Connection::RunTransaction(
    absl::Duration retry_timeout,
    const std::function<absl::Status(Connection&, int)>& fn) {
  return RunRetrying(/*transaction=*/true, retry_timeout, fn);
}

absl::Status Connection::RunWithRetry(
    absl::Duration retry_timeout,
    const std::function<absl::Status(Connection&, int)>& fn) {
  return RunRetrying(/*transaction=*/false, retry_timeout, fn);
}

absl::Status Connection::RunRetrying(
    bool transaction, absl::Duration retry_timeout,
    const std::function<absl::Status(Connection&, int)>& fn) {
  const absl::Time start = absl::Now();
  const absl::Time deadline = start + retry_timeout;
  absl::Duration backoff = options_.initial_backoff;
  absl::BitGen rng;
  absl::Status s;
  int attempt = 0;
  for (;; ++attempt) {
    s = broken() ? Reconnect(deadline) : absl::OkStatus();
    if (s.ok() && transaction) s = Exec("BEGIN").status();
    if (s.ok()) s = fn(*this, attempt);
    if (s.ok() && transaction) {
      if (PQtransactionStatus(conn_.get()) == PQTRANS_INERROR) {
        s = absl::InternalError(
            "transaction aborted by an earlier failed statement whose error "
            "was ignored; rolled back");
      } else {
        s = Exec("COMMIT").status();
      }
    }
    if (s.ok()) return s;
    if (transaction && !broken() &&
        PQtransactionStatus(conn_.get()) != PQTRANS_IDLE) {
      (void)Exec("ROLLBACK");
    }
    if (!IsConnectionLoss(s)) return s;
    absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) break;
    SC_LOG(WARNING) << "PostgreSQL connection lost (attempt " << attempt + 1
                    << "), retrying: " << s.message();
    absl::SleepFor(std::min(backoff * absl::Uniform(rng, 0.75, 1.25), left));
    backoff = std::min(backoff * 2, options_.max_backoff);
  }
  return MakeError(
      absl::StatusCode::kUnavailable,
      absl::StrCat("PostgreSQL at ", Describe(), " unreachable for ",
                   absl::FormatDuration(absl::Now() - start), " (", attempt + 1,
                   " attempts); check that the server is running and accepts "
                   "connections; last error: ",
                   s.message()),
      SqlState(s));
}

}  // namespace sidecar::pg
