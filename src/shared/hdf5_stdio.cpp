// Only in the bundle's libdreambooth.so (Makefile), not in libdreambooth.a. Debian's static HDF5
// (libhdf5_serial.a) is PIE code: it reaches libc's stdout and stderr PC-relative, as an executable may
// (copy relocations), which a shared library cannot do for another library's data. The library links a
// copy of that archive with the two symbols renamed to these, which live inside it and point at libc's
// own streams from load time on (HDF5 prints only when called, never from a constructor).
#include <cstdio>

extern "C" {
__attribute__((visibility("hidden"))) FILE* db_hdf5_stderr = stderr;
__attribute__((visibility("hidden"))) FILE* db_hdf5_stdout = stdout;
}
