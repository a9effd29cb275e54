#pragma once
// Errors that carry context (file, tensor, rank, step) and end the process with one clear line.
//
//   DB_CHECK(n > 0, "expected a positive step count, got ", n);
//   ErrorContext ctx("file ", path);   // prefixes any Error thrown in this scope
//   throw Error("tensor ", name, ": shape mismatch");
//
// An Error's message is "ctx1: ctx2: what". The CLI prints it once as "error: <message>" and exits 1.
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace db {

template <typename... Args>
std::string str_cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

// The context stack of the calling thread, outermost first.
std::vector<std::string>& error_context_stack();
std::string current_error_context();  // "a: b: " or ""

class Error : public std::runtime_error {
 public:
  // Prefixes the message with the thread's current context.
  template <typename... Args>
  explicit Error(const Args&... args) : std::runtime_error(current_error_context() + str_cat(args...)) {}
};

// RAII: while alive, every Error built on this thread is prefixed with this context.
class ErrorContext {
 public:
  template <typename... Args>
  explicit ErrorContext(const Args&... args) {
    error_context_stack().push_back(str_cat(args...));
  }
  ~ErrorContext() { error_context_stack().pop_back(); }
  ErrorContext(const ErrorContext&) = delete;
  ErrorContext& operator=(const ErrorContext&) = delete;
};

// Thrown for a bad command line; the CLI exits 2 for these.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace db

#define DB_CHECK(cond, ...)                      \
  do {                                           \
    if (!(cond)) throw ::db::Error(__VA_ARGS__); \
  } while (0)
