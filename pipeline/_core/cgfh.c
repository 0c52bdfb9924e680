// SPDX-License-Identifier: MIT
/* Direct lookup of a cgroup by id (cgfh.h). */
#define _GNU_SOURCE
#include "cgfh.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* kernfs's handle type (include/linux/exportfs.h): 8 bytes, the node id */
#define FILEID_KERNFS 0xfe

/* Deeper cgroups are not named (their events say unknown), as the walk's
 * bound (pipeline/cgroups.py MAX_DEPTH): it also bounds what verifying one
 * path costs, however deep a user nests cgroups. */
#define MAX_DEPTH 64

#define DIR_FLAGS (O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
#define WALK_FLAGS (O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)

static int open_id(int mount_fd, uint64_t id)
{
	union {
		struct file_handle h;
		unsigned char raw[sizeof(struct file_handle) + sizeof(uint64_t)];
	} u;

	memset(&u, 0, sizeof(u));
	u.h.handle_bytes = sizeof(uint64_t);
	u.h.handle_type = FILEID_KERNFS;
	memcpy(u.raw + sizeof(struct file_handle), &id, sizeof(id));
	return open_by_handle_at(mount_fd, &u.h, DIR_FLAGS);
}

/* The link text of descriptor fd: its path as this process sees it, or -1
 * (errno ENAMETOOLONG when it does not fit in cap bytes). */
static ssize_t fd_path(int fd, char *buf, size_t cap)
{
	char link[32];
	ssize_t n;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, buf, cap);
	if (n >= 0 && (size_t)n >= cap) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return n;
}

/* 0 when rel (len bytes: "" or "/a/b") opened from mount_fd component by
 * component, never through a link, never off the mount's file system, is
 * the directory dev:id; else an errno. */
static int verify(int mount_fd, const char *rel, size_t len, dev_t dev, uint64_t id)
{
	char name[NAME_MAX + 1];
	struct stat st;
	size_t i = 0, depth = 0;
	int fd = fcntl(mount_fd, F_DUPFD_CLOEXEC, 0), ret = 0;

	if (fd < 0)
		return errno;
	while (i < len) {
		size_t j, n;
		int nfd;

		if (rel[i] != '/') {
			ret = EINVAL;
			break;
		}
		if (++depth > MAX_DEPTH) {
			ret = ELOOP;
			break;
		}
		for (j = ++i; j < len && rel[j] != '/'; j++)
			;
		n = j - i;
		if (!n || n > NAME_MAX || memchr(rel + i, '\0', n) ||
		    (n == 1 && rel[i] == '.') || (n == 2 && rel[i] == '.' && rel[i + 1] == '.')) {
			ret = EINVAL;
			break;
		}
		memcpy(name, rel + i, n);
		name[n] = '\0';
		nfd = openat(fd, name, WALK_FLAGS);
		if (nfd < 0) {
			ret = errno;
			break;
		}
		close(fd);
		fd = nfd;
		if (fstat(fd, &st)) {
			ret = errno;
			break;
		}
		if (st.st_dev != dev) {
			ret = EXDEV;
			break;
		}
		i = j;
	}
	if (!ret) {
		if (fstat(fd, &st))
			ret = errno;
		else if (st.st_dev != dev || (uint64_t)st.st_ino != id || !S_ISDIR(st.st_mode))
			ret = ESTALE;
	}
	close(fd);
	return ret;
}

/* After a failed verification: GONE when the id no longer opens (removed
 * meanwhile), else UNVERIFIED. */
static int gone_or_unverified(int mount_fd, uint64_t id, int *err)
{
	int fd = open_id(mount_fd, id);

	if (fd >= 0) {
		close(fd);
		return AP_CG_UNVERIFIED;
	}
	if (errno == ESTALE || errno == ENOENT) {
		*err = errno;
		return AP_CG_GONE;
	}
	return AP_CG_UNVERIFIED;
}

int ap_cg_lookup(int mount_fd, uint64_t id, char *out, size_t cap, size_t *len, int *err)
{
	char mnt[PATH_MAX], link[PATH_MAX];
	ssize_t mlen, llen;
	struct stat mst, st;
	const char *rel;
	size_t rlen;
	int fd;

	*len = 0;
	*err = 0;
	if (fstat(mount_fd, &mst)) {
		*err = errno;
		return AP_CG_UNSUPPORTED;
	}
	fd = open_id(mount_fd, id);
	if (fd < 0) {
		*err = errno;
		return (errno == ESTALE || errno == ENOENT) ? AP_CG_GONE : AP_CG_UNSUPPORTED;
	}
	if (fstat(fd, &st)) {
		*err = errno;
		close(fd);
		return AP_CG_UNVERIFIED;
	}
	if (st.st_dev != mst.st_dev || (uint64_t)st.st_ino != id || !S_ISDIR(st.st_mode)) {
		close(fd);
		*err = ESTALE;
		return AP_CG_UNVERIFIED;
	}
	mlen = fd_path(mount_fd, mnt, sizeof(mnt));
	llen = fd_path(fd, link, sizeof(link));
	close(fd);
	if (mlen <= 0 || llen <= 0) {
		*err = (mlen < 0 || llen < 0) ? errno : EINVAL;
		return AP_CG_UNVERIFIED;
	}
	/* the mount's own link is the prefix; "/" when it is the root */
	if (mlen == 1)
		mlen = 0;
	if (llen < mlen || memcmp(link, mnt, (size_t)mlen) ||
	    (llen > mlen && link[mlen] != '/')) {
		*err = EXDEV;
		return gone_or_unverified(mount_fd, id, err);
	}
	rel = link + mlen;
	rlen = (size_t)(llen - mlen);
	if (rlen == 1) /* the mount at "/" and the root cgroup */
		rlen = 0;
	*err = verify(mount_fd, rel, rlen, mst.st_dev, id);
	if (*err)
		return gone_or_unverified(mount_fd, id, err);
	if (rlen > cap) {
		*err = ENAMETOOLONG;
		return AP_CG_UNVERIFIED;
	}
	memcpy(out, rel, rlen);
	*len = rlen;
	return AP_CG_FOUND;
}

PyObject *ap_py_cgroup_lookup(PyObject *Py_UNUSED(m), PyObject *args)
{
	char out[PATH_MAX];
	unsigned long long id;
	size_t len;
	int mount_fd, err, status;

	if (!PyArg_ParseTuple(args, "iK", &mount_fd, &id))
		return NULL;
	Py_BEGIN_ALLOW_THREADS
	status = ap_cg_lookup(mount_fd, (uint64_t)id, out, sizeof(out), &len, &err);
	Py_END_ALLOW_THREADS
	if (status != AP_CG_FOUND)
		return Py_BuildValue("(iOi)", status, Py_None, err);
	return Py_BuildValue("(iy#i)", status, out, (Py_ssize_t)len, 0);
}
