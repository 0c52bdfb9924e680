/* SPDX-License-Identifier: MIT */
/* What every part of the C extension shares: the one exception type and the
 * way to raise it, the one way to fail with a message, and pinning a thread
 * to a CPU for the benchmarks. */
#ifndef AP_COREUTIL_H
#define AP_COREUTIL_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* pipeline._core.CoreError (an OSError): args are (errno, one-line message). */
extern PyObject *ap_core_error;

/* Raises CoreError(|code|, formatted message) and returns NULL. */
PyObject *ap_raise(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Writes the formatted one-line message into err and returns -|code|
 * (-EINVAL for a code of 0, so a failure is never mistaken for success):
 * the C side's one way to fail, before ap_raise turns it into CoreError. */
int ap_fail(char *err, size_t errlen, int code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Pins the calling thread to cpu (no-op for a negative cpu). */
void ap_pin_to_cpu(int cpu);

#endif
