/*
 * edgecnn instruction counter: a qemu TCG plugin (qemu-user 7.2, plugin API v1).
 *
 * Counts guest instructions per vCPU (in qemu-user one vCPU is one guest
 * thread) and reports, for each region the guest brackets with marker
 * syscalls, how many instructions the *calling* thread executed in it. Only
 * the calling thread counts in that figure because runtimes keep worker
 * threads whose spinning would make it depend on host scheduling.
 *
 * With profile=1 it also reports, per thread that ran in the region, the
 * instructions by class (decoded from the A64 encoding at translation time),
 * the memory accesses and bytes, and the futex calls (thread wake-ups and
 * waits: the synchronisation of a thread pool). With l1=BYTES:WAYS and
 * l2=BYTES:WAYS (64-byte lines, LRU, write-allocate) every data access also
 * goes through a cache model: an L1 per thread and one L2 shared by all,
 * as on the Cortex-A53/A72 clusters of a Raspberry Pi 3/4. With start=warm
 * nothing is instrumented until marker 3 (the guest sends it before its
 * warm-up invokes): the interpreter's start-up and imports run at qemu's own
 * speed, then the plugin resets (qemu drops its translations) and instruments
 * every block translated from there, so the regions still see caches the
 * warm-up filled. Measured on a72 bundles, 2 counted images: TVM YOLO-Lite
 * 101 -> 43.9 s, TVM MobileNetV2 75.3 -> 12.5 s, TFLite MobileNetV2 10.4 -> 3.9 s;
 * the same instruction counts (within 520 of 626 M: Python between the
 * markers) and misses within 0.6%. (The earlier cache=marker, a callback on
 * every start-up access and no cache lookup, took TVM YOLO-Lite from 137 s to
 * 112 s.)
 *
 * Marker: syscall(EDGECNN_MARKER_NR, EDGECNN_MARKER_MAGIC, 1 = start | 2 = stop | 3 = cache model on).
 * The number is unused on aarch64 Linux, so the guest just gets -ENOSYS.
 * edgecnn/emulate/guest/edgecnn_marker.py issues it; keep the numbers equal
 * (tests/unit/test_emulate_run.py::test_marker_numbers_agree_between_plugin_and_guest checks).
 *
 * Usage: qemu-aarch64 -plugin libinsncount.so,out=/path/counts.txt[,profile=1,l1=32768:2,l2=1048576:16,start=warm] ...
 * Output lines: "edgecnn-insn-count 2", then per stop marker first (profile
 * only) "thread <region> <vcpu> key=value ..." for each thread that ran, then
 * "region <index> <count>"; "error <text>" when markers are misused.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

#define EDGECNN_MARKER_NR 0x7ec0
#define EDGECNN_MARKER_MAGIC 0x0edc00c0de000001ULL
#define MAX_VCPUS 4096
#define AARCH64_FUTEX_NR 98
#define LINE_SHIFT 6

/* Instruction classes; the order is the output's. */
enum { C_BRANCH, C_INT, C_INT_MUL, C_LOAD, C_STORE, C_VEC_LOAD, C_VEC_STORE, C_VEC_FMUL, C_VEC_IMUL,
       C_VEC_OTHER, N_CLASSES };
static const char *class_names[N_CLASSES] = {"branch", "int", "int_mul", "load", "store", "vec_load",
                                             "vec_store", "vec_fmul", "vec_imul", "vec_other"};

/* Per-thread statistics: written only by the thread that owns the slot. */
enum { S_INSN, S_LOADS, S_STORES, S_LOAD_BYTES, S_STORE_BYTES, S_L1_MISS, S_L2_MISS, S_FUTEX,
       S_CLASS0, N_STATS = S_CLASS0 + N_CLASSES };
static const char *stat_names[S_CLASS0] = {"insn", "loads", "stores", "load_bytes", "store_bytes",
                                           "l1_miss", "l2_miss", "futex"};

typedef struct {
    uint64_t stat[N_STATS];
} Stats;

typedef struct {
    uint64_t n;
    uint32_t cls[N_CLASSES];
} TbInfo;

typedef struct {
    unsigned sets, ways;
    uint64_t *tags; /* sets x ways, most recent first; 0 = empty (tags are line + 1) */
} Cache;

static Stats stats[MAX_VCPUS];
static Stats at_start[MAX_VCPUS];
static Cache *l1[MAX_VCPUS];
static Cache l2;
static pthread_mutex_t l2_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned l1_bytes, l1_ways, l2_bytes, l2_ways;
static int profile;
static int live = 1; /* 0 with start=warm until the reset after marker 3 */
static int reset_asked;
static FILE *out;
static int counting_vcpu = -1;
static int regions;
static unsigned max_vcpu_seen;

static int cache_init(Cache *c, unsigned bytes, unsigned ways)
{
    c->ways = ways;
    c->sets = bytes >> LINE_SHIFT;
    c->sets /= ways;
    if (c->sets == 0 || (c->sets & (c->sets - 1)) != 0) {
        return -1; /* a power of two sets: the index is a mask */
    }
    c->tags = calloc((size_t)c->sets * ways, sizeof(uint64_t));
    return c->tags ? 0 : -1;
}

/* 1 on a hit; on a miss the line is brought in and the least recently used one dropped. */
static int cache_access(Cache *c, uint64_t line)
{
    uint64_t tag = line + 1;
    uint64_t *set = c->tags + (size_t)(line & (c->sets - 1)) * c->ways;
    unsigned i = 0;
    while (i < c->ways && set[i] != tag) {
        i++;
    }
    int hit = i < c->ways;
    if (!hit) {
        i = c->ways - 1;
    }
    memmove(set + 1, set, i * sizeof(uint64_t));
    set[0] = tag;
    return hit;
}

static void note_vcpu(unsigned vcpu)
{
    if (vcpu + 1 > max_vcpu_seen) {
        __atomic_store_n(&max_vcpu_seen, vcpu + 1, __ATOMIC_RELAXED);
    }
}

static void tb_exec(unsigned int vcpu, void *udata)
{
    if (vcpu < MAX_VCPUS) {
        stats[vcpu].stat[S_INSN] += (uintptr_t)udata;
    }
}

static void tb_exec_profile(unsigned int vcpu, void *udata)
{
    if (vcpu >= MAX_VCPUS) {
        return;
    }
    const TbInfo *tb = udata;
    uint64_t *s = stats[vcpu].stat;
    s[S_INSN] += tb->n;
    for (int k = 0; k < N_CLASSES; k++) {
        s[S_CLASS0 + k] += tb->cls[k];
    }
    note_vcpu(vcpu);
}

static void mem_access(unsigned int vcpu, qemu_plugin_meminfo_t info, uint64_t vaddr, void *udata)
{
    if (vcpu >= MAX_VCPUS) {
        return;
    }
    uint64_t *s = stats[vcpu].stat;
    uint64_t bytes = 1ULL << qemu_plugin_mem_size_shift(info);
    int store = qemu_plugin_mem_is_store(info);
    s[store ? S_STORES : S_LOADS] += 1;
    s[store ? S_STORE_BYTES : S_LOAD_BYTES] += bytes;
    if (l1_bytes == 0) {
        return;
    }
    if (l1[vcpu] == NULL) {
        Cache *c = calloc(1, sizeof(Cache));
        if (c == NULL || cache_init(c, l1_bytes, l1_ways) != 0) {
            return;
        }
        l1[vcpu] = c;
    }
    uint64_t line = vaddr >> LINE_SHIFT;
    if (cache_access(l1[vcpu], line)) {
        return;
    }
    s[S_L1_MISS] += 1;
    if (l2_bytes == 0) {
        return;
    }
    pthread_mutex_lock(&l2_lock);
    int hit = cache_access(&l2, line);
    pthread_mutex_unlock(&l2_lock);
    if (!hit) {
        s[S_L2_MISS] += 1;
    }
}

/* The class of one A64 instruction, from its encoding groups (Arm ARM C4.1). */
static int classify(uint32_t insn)
{
    uint32_t op0 = (insn >> 25) & 0xF;
    if ((op0 & 0xE) == 0xA) {
        return C_BRANCH; /* branches, exceptions, system */
    }
    if ((op0 & 0x5) == 0x4) { /* loads and stores */
        int vec = (insn >> 26) & 1, store;
        if (((insn >> 27) & 7) == 7) { /* load/store register: opc in 23:22 */
            uint32_t opc = (insn >> 22) & 3;
            store = opc == 0 || (vec && opc == 2);
        } else if (((insn >> 27) & 7) == 3 && !((insn >> 24) & 1)) {
            store = 0; /* load literal */
        } else {
            store = !((insn >> 22) & 1); /* pairs, structures, exclusives: L in bit 22 */
        }
        return vec ? (store ? C_VEC_STORE : C_VEC_LOAD) : (store ? C_STORE : C_LOAD);
    }
    if ((op0 & 0x7) == 0x7) { /* SIMD and floating point */
        if ((insn & 0x9F200400) == 0x0E200400) { /* three same */
            uint32_t opc = (insn >> 11) & 0x1F;
            if (opc == 0x19 || opc == 0x1B) {
                return C_VEC_FMUL; /* FMLA/FMLS, FMUL/FMULX */
            }
            return (opc == 0x12 || opc == 0x13 || opc == 0x16) ? C_VEC_IMUL : C_VEC_OTHER;
        }
        if ((insn & 0x9F60C400) == 0x0E400400) { /* three same, half precision */
            uint32_t opc = (insn >> 11) & 7;
            return (opc == 1 || opc == 3) ? C_VEC_FMUL : C_VEC_OTHER;
        }
        if ((insn & 0x9F208400) == 0x0E008400) {
            return C_VEC_IMUL; /* three same extra: SDOT/UDOT, SQRDMLAH */
        }
        if ((insn & 0x9F200C00) == 0x0E200000) { /* three different: widening multiplies */
            uint32_t opc = (insn >> 12) & 0xF;
            return (opc >= 8 && opc != 0xF) ? C_VEC_IMUL : C_VEC_OTHER;
        }
        if ((insn & 0x9F000400) == 0x0F000000 || (insn & 0xDF000400) == 0x5F000000) { /* by element */
            uint32_t opc = (insn >> 12) & 0xF;
            return (opc == 1 || opc == 5 || opc == 9) ? C_VEC_FMUL : C_VEC_IMUL;
        }
        if ((insn & 0x5F000000) == 0x1F000000) {
            return C_VEC_FMUL; /* scalar FMADD family */
        }
        if ((insn & 0x5F200C00) == 0x1E200800) { /* scalar two-source: FMUL, FNMUL */
            uint32_t opc = (insn >> 12) & 0xF;
            return (opc == 0 || opc == 8) ? C_VEC_FMUL : C_VEC_OTHER;
        }
        return C_VEC_OTHER;
    }
    if ((insn & 0x1F000000) == 0x1B000000) {
        return C_INT_MUL; /* data processing, three source: MADD, SMULL, UMULH ... */
    }
    return C_INT;
}

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t n = qemu_plugin_tb_n_insns(tb);
    if (!profile) {
        /* A TB's instruction count is fixed at translation: count per executed TB. */
        qemu_plugin_register_vcpu_tb_exec_cb(tb, tb_exec, QEMU_PLUGIN_CB_NO_REGS, (void *)(uintptr_t)n);
        return;
    }
    /* Kept for the life of the run: qemu may execute a TB until exit. */
    TbInfo *info = calloc(1, sizeof(TbInfo));
    if (info == NULL) {
        return;
    }
    info->n = n;
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        uint32_t word = 0;
        if (qemu_plugin_insn_size(insn) == 4) {
            memcpy(&word, qemu_plugin_insn_data(insn), 4);
        }
        int cls = classify(word);
        info->cls[cls] += 1;
        if (cls == C_LOAD || cls == C_STORE || cls == C_VEC_LOAD || cls == C_VEC_STORE) {
            qemu_plugin_register_vcpu_mem_cb(insn, mem_access, QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_MEM_RW, NULL);
        }
    }
    qemu_plugin_register_vcpu_tb_exec_cb(tb, tb_exec_profile, QEMU_PLUGIN_CB_NO_REGS, info);
}

static void print_threads(void)
{
    unsigned top = __atomic_load_n(&max_vcpu_seen, __ATOMIC_RELAXED);
    for (unsigned v = 0; v < top && v < MAX_VCPUS; v++) {
        const uint64_t *now = stats[v].stat, *then = at_start[v].stat;
        if (now[S_INSN] == then[S_INSN]) {
            continue; /* did not run in the region */
        }
        fprintf(out, "thread %d %u", regions, v);
        for (int k = 0; k < S_CLASS0; k++) {
            fprintf(out, " %s=%" PRIu64, stat_names[k], now[k] - then[k]);
        }
        for (int k = 0; k < N_CLASSES; k++) {
            fprintf(out, " %s=%" PRIu64, class_names[k], now[S_CLASS0 + k] - then[S_CLASS0 + k]);
        }
        fputc('\n', out);
    }
}

static void instrument(qemu_plugin_id_t id);

static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu, int64_t num, uint64_t a1,
                       uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6,
                       uint64_t a7, uint64_t a8)
{
    if (num == AARCH64_FUTEX_NR && vcpu < MAX_VCPUS) {
        stats[vcpu].stat[S_FUTEX] += 1;
        return;
    }
    if (num != EDGECNN_MARKER_NR || a1 != EDGECNN_MARKER_MAGIC) {
        return;
    }
    if (vcpu >= MAX_VCPUS) {
        fprintf(out, "error thread index %u past %d\n", vcpu, MAX_VCPUS);
    } else if (a2 == 1) {
        if (counting_vcpu >= 0) {
            fprintf(out, "error start while a region is open\n");
        }
        if (!__atomic_load_n(&live, __ATOMIC_RELAXED)) {
            fprintf(out, "error start before instrumentation began (start=warm waits for marker 3)\n");
        }
        counting_vcpu = (int)vcpu;
        note_vcpu(vcpu);
        memcpy(at_start, stats, sizeof(stats)); /* other threads' slots may move meanwhile: by a few */
    } else if (a2 == 2) {
        if (counting_vcpu != (int)vcpu) {
            fprintf(out, "error stop without a start on this thread\n");
        } else {
            if (profile) {
                print_threads();
            }
            fprintf(out, "region %d %" PRIu64 "\n", regions++,
                    stats[vcpu].stat[S_INSN] - at_start[vcpu].stat[S_INSN]);
            counting_vcpu = -1;
        }
    } else if (a2 == 3) {
        if (!live && !reset_asked) {
            reset_asked = 1;
            /* Runs before this thread's next guest instruction, with the other vCPUs stopped. */
            qemu_plugin_reset(id, instrument);
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

/* Every callback; with start=warm, at the reset after marker 3 (qemu_plugin_reset dropped them all). */
static void instrument(qemu_plugin_id_t id)
{
    __atomic_store_n(&live, 1, __ATOMIC_RELAXED);
    qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
    qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
}

static int parse_cache(const char *text, unsigned *bytes, unsigned *ways)
{
    char *end;
    unsigned long b = strtoul(text, &end, 10);
    if (*end != ':') {
        return -1;
    }
    unsigned long w = strtoul(end + 1, &end, 10);
    if (*end != '\0' || b == 0 || w == 0 || w > 64) {
        return -1;
    }
    *bytes = (unsigned)b;
    *ways = (unsigned)w;
    return 0;
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                           int argc, char **argv)
{
    const char *path = NULL;
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "out=", 4) == 0) {
            path = argv[i] + 4;
        } else if (strcmp(argv[i], "profile=1") == 0) {
            profile = 1;
        } else if (strcmp(argv[i], "start=warm") == 0) {
            live = 0;
        } else if (strncmp(argv[i], "l1=", 3) == 0 && parse_cache(argv[i] + 3, &l1_bytes, &l1_ways) == 0) {
            profile = 1;
        } else if (strncmp(argv[i], "l2=", 3) == 0 && parse_cache(argv[i] + 3, &l2_bytes, &l2_ways) == 0) {
            profile = 1;
        } else {
            fprintf(stderr, "edgecnn insn_count: unknown argument %s\n", argv[i]);
            return 1;
        }
    }
    if (path == NULL) {
        fprintf(stderr, "edgecnn insn_count: give out=FILE\n");
        return 1;
    }
    if (l2_bytes && (l1_bytes == 0 || cache_init(&l2, l2_bytes, l2_ways) != 0)) {
        fprintf(stderr, "edgecnn insn_count: l2 needs l1 and a power-of-two number of sets\n");
        return 1;
    }
    if (l1_bytes) {
        Cache probe;
        if (cache_init(&probe, l1_bytes, l1_ways) != 0) {
            fprintf(stderr, "edgecnn insn_count: l1 needs a power-of-two number of sets\n");
            return 1;
        }
        free(probe.tags);
    }
    out = fopen(path, "w");
    if (out == NULL) {
        perror(path);
        return 1;
    }
    fprintf(out, "edgecnn-insn-count 2\n");
    fflush(out);
    if (live) {
        instrument(id);
    } else { /* the markers (and futex calls) only, until marker 3 */
        qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
        qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    }
    return 0;
}
