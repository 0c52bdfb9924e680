/* SPDX-License-Identifier: MIT */
/* What every extension module shares (compiled into each): the one exception type and the
 * way to raise it, the one way to fail with a message, and pinning a thread
 * to a CPU for the benchmarks. */
#ifndef AP_COREUTIL_H
#define AP_COREUTIL_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* pipeline._coreerror.CoreError (an OSError): args are (errno, one-line
 * message). One class for every extension module (each exports it as
 * CoreError), so `except CoreError` catches any of them; it lives in a
 * Python module because the modules share no C state. */
extern PyObject *ap_core_error;

/* Imports CoreError and adds it to the module m. Call first in a module's
 * init. Returns 0, or -1 with an exception set. */
int ap_add_core_error(PyObject *m);

/* Raises CoreError(|code|, formatted message) and returns NULL. */
PyObject *ap_raise(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Writes the formatted one-line message into err and returns -|code|
 * (-EINVAL for a code of 0, so a failure is never mistaken for success):
 * the C side's one way to fail, before ap_raise turns it into CoreError. */
int ap_fail(char *err, size_t errlen, int code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* libbpf has one print hook per process, and prints warnings to stderr
 * without one. The runtime module (pipeline._core) installs its own, which
 * keeps the messages for its error reports; the other modules call this at
 * init: it installs a hook that drops the messages, unless another module's
 * hook is in place already (which it then leaves alone). */
void ap_libbpf_quiet(void);

/* Pins the calling thread to cpu (no-op for a negative cpu). */
void ap_pin_to_cpu(int cpu);

#endif
