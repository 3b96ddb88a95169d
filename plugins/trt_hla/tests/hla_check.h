// CHECK(cond) for the trt_hla test executables: counts checks and failures, prints each failure
// with its file and line, never aborts. main() ends with HLA_CHECK_SUMMARY(name).
#pragma once

#include <cstdio>

static int gFailures = 0;
static int gChecks = 0;

#define CHECK(cond)                                                        \
  do {                                                                     \
    ++gChecks;                                                             \
    if (!(cond)) {                                                         \
      ++gFailures;                                                         \
      std::printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);          \
    }                                                                      \
  } while (0)

// Prints "<name>: N checks, M failures" (tests/test_trt_plugin_build.py reads it); the exit code.
#define HLA_CHECK_SUMMARY(name) \
  (std::printf("%s: %d checks, %d failures\n", name, gChecks, gFailures), gFailures == 0 ? 0 : 1)
