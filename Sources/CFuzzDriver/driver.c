#include "cfuzzdriver.h"

// libFuzzer's entry point for programs that keep their own main (libclang_rt.fuzzer_no_main);
// weak, so a build without libFuzzer links and sees it as absent.
extern int LLVMFuzzerRunDriver(int *argc, char ***argv, jr_fuzz_callback callback) __attribute__((weak));

int jr_fuzz_run_driver(int *argc, char ***argv, jr_fuzz_callback callback) {
    if (LLVMFuzzerRunDriver == 0) return -1;
    return LLVMFuzzerRunDriver(argc, argv, callback);
}
