/*
 * edgecnn instruction counter: a qemu TCG plugin (qemu-user 7.2, plugin API v1).
 *
 * Counts guest instructions per vCPU (in qemu-user one vCPU is one guest
 * thread) and reports, for each region the guest brackets with marker
 * syscalls, how many instructions the *calling* thread executed in it. Only
 * the calling thread counts because runtimes keep worker threads whose
 * spinning would make the figure depend on host scheduling.
 *
 * Marker: syscall(EDGECNN_MARKER_NR, EDGECNN_MARKER_MAGIC, 1 = start | 2 = stop).
 * The number is unused on aarch64 Linux, so the guest just gets -ENOSYS.
 * edgecnn/emulate/guest/edgecnn_marker.py issues it; keep the numbers equal
 * (tests/unit/test_emulate_plugin.py checks).
 *
 * Usage: qemu-aarch64 -plugin libinsncount.so,out=/path/counts.txt ...
 * Output lines: "edgecnn-insn-count 1", then "region <index> <count>" per
 * stop marker, or "error <text>" when markers are misused.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

#define EDGECNN_MARKER_NR 0x7ec0
#define EDGECNN_MARKER_MAGIC 0x0edc00c0de000001ULL
#define MAX_VCPUS 4096

/* Written only by the thread that owns the slot: no locking needed. */
static uint64_t counts[MAX_VCPUS];
static FILE *out;
static int counting_vcpu = -1;
static uint64_t start_count;
static int regions;

static void tb_exec(unsigned int vcpu, void *udata)
{
    if (vcpu < MAX_VCPUS) {
        counts[vcpu] += (uintptr_t)udata;
    }
}

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    /* A TB's instruction count is fixed at translation: count per executed TB. */
    uintptr_t n = qemu_plugin_tb_n_insns(tb);
    qemu_plugin_register_vcpu_tb_exec_cb(tb, tb_exec, QEMU_PLUGIN_CB_NO_REGS, (void *)n);
}

static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu, int64_t num, uint64_t a1,
                       uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6,
                       uint64_t a7, uint64_t a8)
{
    if (num != EDGECNN_MARKER_NR || a1 != EDGECNN_MARKER_MAGIC) {
        return;
    }
    if (vcpu >= MAX_VCPUS) {
        fprintf(out, "error thread index %u past %d\n", vcpu, MAX_VCPUS);
    } else if (a2 == 1) {
        if (counting_vcpu >= 0) {
            fprintf(out, "error start while a region is open\n");
        }
        counting_vcpu = (int)vcpu;
        start_count = counts[vcpu];
    } else if (a2 == 2) {
        if (counting_vcpu != (int)vcpu) {
            fprintf(out, "error stop without a start on this thread\n");
        } else {
            fprintf(out, "region %d %" PRIu64 "\n", regions++, counts[vcpu] - start_count);
            counting_vcpu = -1;
        }
    } else {
        fprintf(out, "error unknown marker %" PRIu64 "\n", a2);
    }
    fflush(out);
}

static void at_exit(qemu_plugin_id_t id, void *p)
{
    fprintf(out, "exit %d\n", regions);
    fclose(out);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                           int argc, char **argv)
{
    const char *path = NULL;
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "out=", 4) == 0) {
            path = argv[i] + 4;
        }
    }
    if (path == NULL) {
        fprintf(stderr, "edgecnn insn_count: give out=FILE\n");
        return 1;
    }
    out = fopen(path, "w");
    if (out == NULL) {
        perror(path);
        return 1;
    }
    fprintf(out, "edgecnn-insn-count 1\n");
    fflush(out);
    qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
    qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
