// Error values of the dc delegate: a message that reaches the user through TFLite's error reporter.
#ifndef DC_DELEGATE_STATUS_H_
#define DC_DELEGATE_STATUS_H_

#include <string>
#include <utility>

namespace dc::delegate {

class Status {
 public:
  Status() = default;  // OK
  static Status Error(std::string message) { return Status(std::move(message)); }
  bool ok() const { return !failed_; }
  const std::string& message() const { return message_; }

 private:
  explicit Status(std::string message) : failed_(true), message_(std::move(message)) {}
  bool failed_ = false;
  std::string message_;
};

}  // namespace dc::delegate

#endif  // DC_DELEGATE_STATUS_H_
