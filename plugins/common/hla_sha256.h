// SHA-256 (FIPS 180-4) of a byte buffer as 64 lowercase hex digits: the AOT launcher checks each
// cubin against the sha256 its manifest.json records before loading it.
#pragma once

#include <cstddef>
#include <string>

namespace hla {

std::string sha256_hex(const void* data, size_t size);

}  // namespace hla
