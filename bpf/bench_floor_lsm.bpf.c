// SPDX-License-Identifier: GPL-2.0
/*
 * The LSM producer's floor (scripts/vm-cost.py, in a test VM: this machine's
 * kernel refuses BPF trampolines): an empty program on each hook lsm.bpf.c
 * attaches, each of the same kind (sleepable or not), since the trampoline's
 * entry and exit differ between the two. What it costs a creation is what any
 * BPF LSM program on these hooks pays before it does any work: the hook's
 * call into the trampoline and the program's dispatch.
 * tests/test_vm_cost.py checks that the hooks and kinds stay lsm.bpf.c's.
 */
#include "common.bpf.h"

char LICENSE[] SEC("license") = "GPL";

SEC("lsm.s/inode_create")
int BPF_PROG(floor_inode_create)
{
	return 0;
}

SEC("lsm.s/inode_mknod")
int BPF_PROG(floor_inode_mknod)
{
	return 0;
}

SEC("lsm/inode_mkdir")
int BPF_PROG(floor_inode_mkdir)
{
	return 0;
}
