// Error values of the dc delegate: a message that reaches the user through TFLite's error reporter. The
// codec's and the kernel library's type, so their errors pass through unchanged.
#ifndef DC_DELEGATE_STATUS_H_
#define DC_DELEGATE_STATUS_H_

#include "dc_codec.h"

namespace dc::delegate {

using Status = codec::Status;

}  // namespace dc::delegate

#endif  // DC_DELEGATE_STATUS_H_
