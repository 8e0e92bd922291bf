/* Shared by skillsoup's fused CPU kernels (scan.c: prefill, step.c: decode): vector types, exp,
 * log1p, softplus, silu, and a small thread pool. Float32 only, no torch headers.
 *
 * Built at first use by skillsoup/models/cpu_build.py with the system C compiler
 * (cc -O3 -march=native -shared -fPIC -pthread scan.c step.c) and called through ctypes; the
 * PyTorch twins with the same contracts are in skillsoup/models/ops.py and mamba1.py / mamba2.py,
 * and tests/models/test_cpu_ops.py compares them.
 *
 * Vectors: GCC/Clang vector extensions of the target's widest float vector (VL lanes: 16 with
 * AVX-512, 8 with AVX, 4 otherwise), so one source serves x86 and ARM. A block of W = 16 channels
 * (one cache line of a token's row) is NV = W / VL of them. exp is 2^x by range reduction and a
 * fitted polynomial, log1p is Cephes' logf with a rounding correction, both within a few ulp and
 * written out here: -ffast-math (which would let the compiler call glibc's vector expf) links
 * crtfastmath.o, which switches the whole process, torch included, to flush-denormals-to-zero.
 */
#ifndef SSC_COMMON_H
#define SSC_COMMON_H
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#define SSC_ABI_VERSION 4
#define W 16 /* channels per block: 64 bytes, one cache line of each token's row */
#define MAX_THREADS 64

/* the widest vector the target has: a block of W channels is NV of them */
#if defined(__AVX512F__)
#define VL 16
#elif defined(__AVX__)
#define VL 8
#else
#define VL 4 /* SSE2, NEON, and what the compiler lowers elsewhere */
#endif
#define NV (W / VL)

typedef float vf __attribute__((vector_size(VL * sizeof(float))));
typedef int32_t vi __attribute__((vector_size(VL * sizeof(int32_t))));
typedef struct { vf v[NV]; } blk; /* W channels */
#define INLINE static inline __attribute__((always_inline))
#define EACH for (int v = 0; v < NV; v++)


/* ---- vector helpers ------------------------------------------------------------------------ */
INLINE vf splat(float x) { return (vf){0} + x; }
INLINE vf blend(vi mask, vf yes, vf no) { return (vf)(((vi)yes & mask) | ((vi)no & ~mask)); }
/* a compare and a blend (GCC 12 turns the equivalent lane loops into scalar min / max and inserts,
 * which made every exp three times longer); a NaN in a stays NaN */
INLINE vf vmax(vf a, vf b) { return blend(b > a, b, a); }
/* the cheaper min: a NaN in a becomes b (exp only needs it for an upper clamp) */
INLINE vf vmin_fast(vf a, vf b) { return blend(a < b, a, b); }

/* W channels from p (w of them valid; zeros beyond) */
INLINE blk load(const float *p, int w) {
    blk b = {{{0}}};
    if (w == W) memcpy(&b, p, sizeof b);
    else for (int j = 0; j < w; j++) b.v[j / VL][j % VL] = p[j];
    return b;
}

INLINE void store(float *p, blk b, int w) {
    if (w == W) memcpy(p, &b, sizeof b);
    else for (int j = 0; j < w; j++) p[j] = b.v[j / VL][j % VL];
}

/* lanes j < w of p[j * stride], zeros beyond */
INLINE blk gather(const float *p, int64_t stride, int w) {
    blk b = {{{0}}};
    for (int j = 0; j < w; j++) b.v[j / VL][j % VL] = p[j * stride];
    return b;
}

INLINE void scatter(float *p, int64_t stride, blk b, int w) {
    for (int j = 0; j < w; j++) p[j * stride] = b.v[j / VL][j % VL];
}

INLINE blk bsplat(float x) { blk b; EACH b.v[v] = splat(x); return b; }

/* 2^x: x = k + r with k an integer and |r| <= 1/2; 2^r by a degree-6 polynomial (fitted for
 * relative error, 1.6 ulp at most), 2^k added straight into the exponent bits of the result. Inputs
 * below -125 give 0 (the reference gives at most 2^-125 there), above 127 saturate at 2^127 (only
 * sigmoid's exp(-z) gets there, where the result is 0 either way). A NaN x gives a finite value:
 * callers carry NaNs through their other operands. About 15 vector instructions. */
typedef uint32_t vu __attribute__((vector_size(VL * sizeof(uint32_t))));
#define MAGIC 12582912.0f /* 1.5 * 2^23: adding it rounds to an integer, held in the low mantissa bits */

/* 2^(k + r) from t = k + MAGIC and r; zero where under */
INLINE vf pow2_parts(vf t, vf r, vi under) {
    /* Estrin's scheme: a dependency chain of 4 multiply-adds instead of Horner's 6, so that more
     * of the independent exps of a token overlap in the core's schedulers */
    const vf r2 = r * r, r4 = r2 * r2;
    const vf p01 = r * 6.9314718246459961e-1f + 1.0f;
    const vf p23 = r * 5.5503323674201965e-2f + 2.4022647738456726e-1f;
    const vf p45 = r * 1.3398875016719103e-3f + 9.6184369176626205e-3f;
    const vf p46 = r2 * 1.5353361959569156e-4f + p45;
    const vf p = r4 * p46 + (r2 * p23 + p01);
    /* (bits of t) << 23 == k << 23: the magic constant's own bits shift out */
    return (vf)(((vu)p + ((vu)t << 23)) & ~(vu)under);
}

INLINE vf v_exp2(vf x) {
    const vi under = x < splat(-125.0f); /* zeroed at the end, so no lower clamp is needed */
    x = vmin_fast(x, splat(127.0f));
    const vf t = x + MAGIC;
    return pow2_parts(t, x - (t - MAGIC), under);
}

/* exp(x) with the reduction x - k ln2 done in two parts (Cody-Waite), so large |x| keep full
 * precision; for the per-token gates (silu, softplus). The scan's inner loop uses v_exp2 on
 * dt * (A log2 e), whose rounding matches the reference's own rounding of dt * A. */
INLINE vf v_exp(vf x) {
    const vi under = x < splat(-86.643f); /* 2^-125 */
    x = vmin_fast(x, splat(88.0f));
    const vf t = x * 1.44269504088896341f + MAGIC, kf = t - MAGIC;
    const vf r = (x - kf * 0.693359375f - kf * -2.12194440e-4f) * 1.44269504088896341f;
    return pow2_parts(t, r, under);
}

/* log(1 + y) for y in [0, 1]: Cephes logf on u = 1 + y, then the classic correction
 * log(u) * y / (u - 1) that recovers what rounding 1 + y lost. */
INLINE vf v_log1p_unit(vf y) {
    vf u = y + 1.0f;
    vi ub = (vi)u;
    vf e = __builtin_convertvector(((ub >> 23) & 0xff) - 126, vf);
    vf m = (vf)((ub & 0x007fffff) | 0x3f000000); /* mantissa in [0.5, 1) */
    vi small = m < splat(0.707106781186547524f);
    e = e - blend(small, splat(1.0f), splat(0.0f));
    vf x = m - 1.0f + blend(small, m, splat(0.0f));
    vf z = x * x;
    vf p = splat(7.0376836292e-2f);
    p = p * x - 1.1514610310e-1f;
    p = p * x + 1.1676998740e-1f;
    p = p * x - 1.2420140846e-1f;
    p = p * x + 1.4249322787e-1f;
    p = p * x - 1.6668057665e-1f;
    p = p * x + 2.0000714765e-1f;
    p = p * x - 2.4999993993e-1f;
    p = p * x + 3.3333331174e-1f;
    vf r = p * x * z + e * -2.12194440e-4f - 0.5f * z;
    r = x + r + e * 0.693359375f;
    vf d = u - 1.0f; /* exact */
    return blend(d == splat(0.0f), y, r * (y / d));
}

/* softplus(x) = max(x, 0) + log1p(exp(-|x|)), equal to torch's log1p(exp(x)) / x above 20 */
INLINE vf v_softplus(vf x) {
    vf ax = (vf)((vi)x & 0x7fffffff);
    return vmax(x, splat(0.0f)) + v_log1p_unit(v_exp(-ax));
}

INLINE vf v_silu(vf x) { return x / (1.0f + v_exp(-x)); }

static inline float softplus1(float x) { return v_softplus(splat(x))[0]; }
static inline float exp1(float x) { return v_exp(splat(x))[0]; }

/* ---- threads ------------------------------------------------------------------------------- */
typedef void (*work_fn)(const void *args, int64_t begin, int64_t end);
/* Items are handed out one at a time from a shared counter, so a thread that the OS pauses on a
 * busy machine holds back one item, not a fixed half of the work. */
typedef struct { work_fn fn; const void *args; int64_t items; int64_t next; } pool;

static inline void *pool_worker(void *p) {
    pool *q = p;
    for (int64_t i; (i = __atomic_fetch_add(&q->next, 1, __ATOMIC_RELAXED)) < q->items;)
        q->fn(q->args, i, i + 1);
    return NULL;
}

static inline void run_parallel(work_fn fn, const void *args, int64_t items, int threads) {
    if (threads > items) threads = (int)items;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if (threads <= 1) {
        fn(args, 0, items);
        return;
    }
    pool q = {fn, args, items, 0};
    pthread_t tid[MAX_THREADS];
    int started = 0;
    while (started < threads - 1 && pthread_create(&tid[started], NULL, pool_worker, &q) == 0) started++;
    pool_worker(&q); /* this thread works too; items left by failed thread starts are done here */
    for (int i = 0; i < started; i++) pthread_join(tid[i], NULL);
}

#endif
