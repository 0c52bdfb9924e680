/* SPDX-License-Identifier: MIT */
/* Includes every BPF object starts with. */
#ifndef AP_COMMON_BPF_H
#define AP_COMMON_BPF_H
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#endif
