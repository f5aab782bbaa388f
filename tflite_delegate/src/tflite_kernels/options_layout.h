// Byte layouts of the dc ops' custom options records: fixed little-endian structs, each declared by the op's
// spec in dc_keras/export/op_specs.py (magic, version, then named fields in order). Each glue file declares
// its record as an options::Layout holding the same field list; the byte offsets it reads follow from that
// list at compile time, and tests/test_options_layout.py compares the list, magic, version and struct format
// with the spec (through dc_delegate_options_format / dc_delegate_options_fields), so the two sides cannot
// drift apart silently.
#ifndef DC_DELEGATE_TFLITE_KERNELS_OPTIONS_LAYOUT_H_
#define DC_DELEGATE_TFLITE_KERNELS_OPTIONS_LAYOUT_H_

#include <cstddef>
#include <cstdint>
#include <string>

namespace dc::delegate::options {

// Every record starts with a 4-byte magic and a uint8 version.
constexpr size_t kMagic = 0, kVersion = 4, kHeaderSize = 5;

// A field after the header: its name in the op's spec and its struct code ('B' uint8, 'i' int32).
struct Field {
  const char* name;
  char type;
};

constexpr size_t FieldBytes(char type) { return type == 'i' ? 4 : 1; }

constexpr bool SameName(const char* a, const char* b) {
  while (*a != '\0' && *a == *b) {
    ++a;
    ++b;
  }
  return *a == *b;
}

class Layout {
 public:
  template <size_t N>
  constexpr Layout(const char (&magic)[5], uint8_t version, const Field (&fields)[N])
      : magic_(magic), version_(version), fields_(fields), count_(N) {}

  // Byte offset of field `name`. Only for constant expressions (constexpr size_t kUnits =
  // kLayout.Offset("units")): there a name the layout lacks does not compile.
  constexpr size_t Offset(const char* name) const {
    size_t at = kHeaderSize;
    for (size_t i = 0; i < count_; ++i) {
      if (SameName(fields_[i].name, name)) return at;
      at += FieldBytes(fields_[i].type);
    }
    throw "the options layout has no field of this name";
  }

  // Size of the record in bytes.
  constexpr size_t size() const {
    size_t at = kHeaderSize;
    for (size_t i = 0; i < count_; ++i) at += FieldBytes(fields_[i].type);
    return at;
  }

  const char* magic() const { return magic_; }  // 4 characters
  uint8_t version() const { return version_; }

  // Python struct format of the record ("<4sBBBBii").
  std::string StructFormat() const;
  // "<magic> <version> <field>,<field>,...", header fields included ("DCFC 1 magic,version,units,...").
  std::string Description() const;

 private:
  const char* magic_;
  uint8_t version_;
  const Field* fields_;
  size_t count_;
};

}  // namespace dc::delegate::options

#endif  // DC_DELEGATE_TFLITE_KERNELS_OPTIONS_LAYOUT_H_
