#ifndef CFUZZDRIVER_H
#define CFUZZDRIVER_H

#include <stddef.h>
#include <stdint.h>

typedef int (*jr_fuzz_callback)(const uint8_t *data, size_t size);

/// Runs libFuzzer's driver when the binary was linked with it (`make fuzz`); returns -1 without
/// running anything otherwise (a plain build replays inputs instead).
int jr_fuzz_run_driver(int *argc, char ***argv, jr_fuzz_callback callback);

#endif
