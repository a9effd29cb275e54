#pragma once
namespace db {
inline constexpr const char* kVersion = "0.1.0";
}
