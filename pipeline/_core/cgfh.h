/* SPDX-License-Identifier: MIT */
/*
 * One cgroup id -> its path, without walking the cgroup2 tree. On cgroup v2
 * the id the kernel puts in a record is the cgroup directory's kernfs node
 * id, and kernfs decodes a file handle of type FILEID_KERNFS holding those
 * 8 bytes, so open_by_handle_at(2) on the cgroup2 mount opens the directory
 * (CAP_DAC_READ_SEARCH). Its path comes from the descriptor's link in
 * /proc/self/fd, text a user partly chose (cgroup names), so it is only
 * returned after being opened again from the mount, one component at a time
 * without following links and on the same file system, and found to be the
 * same directory (inode number == id).
 */
#ifndef AP_CGFH_H
#define AP_CGFH_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stddef.h>
#include <stdint.h>

enum ap_cg_found {
	AP_CG_FOUND = 0, /* the verified path is in out */
	AP_CG_GONE = 1, /* no cgroup has that id any more (ESTALE/ENOENT) */
	AP_CG_UNVERIFIED = 2, /* opened, but its path could not be confirmed */
	AP_CG_UNSUPPORTED = 3, /* the kernel or the caller cannot open handles */
};

/* The path of cgroup id below the cgroup2 mount mount_fd ("" for the
 * mount's root, else "/a/b"), at most cap bytes without NUL, into out;
 * an enum ap_cg_found, with *err the errno behind anything but FOUND. */
int ap_cg_lookup(int mount_fd, uint64_t id, char *out, size_t cap, size_t *len, int *err);

/* cgroup_lookup(mount_fd, id) -> (status, path or None, errno) */
PyObject *ap_py_cgroup_lookup(PyObject *m, PyObject *args);

#endif
