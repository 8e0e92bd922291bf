/* Prefill kernels: the Mamba-1 selective scan, the causal conv, the Mamba-2 (SSD) scan. Each walks
 * time once per block of W channels (see common.h for the layout and the maths). */
#include "common.h"

int ssc_abi_version(void) { return SSC_ABI_VERSION; }

/* ---- Mamba-1 selective scan ------------------------------------------------------------------
 * h_t = exp(dt_t * A) * h_{t-1} + dt_t * u_t * B_t;  y_t = C_t . h_t + D * u_t, times silu(z_t);
 * dt_t = softplus(delta_t + dt_bias) when softplus. u, delta, z [b, l, d] and B, C [b, l, n] are
 * token-major with channel stride 1; A [d, n], D, dt_bias [d]; h0, h_out [b, d, n]; y [b, l, d]. */
typedef struct {
    int64_t b, l, d, n;
    const float *u, *delta, *z, *B, *C, *A, *D, *dt_bias, *h0;
    int64_t u_sb, u_st, dt_sb, dt_st, z_sb, z_st, B_sb, B_st, C_sb, C_st, y_sb, y_st;
    float *y, *h_out;
    int softplus;
} scan_args;

/* 2^x for x <= 0 or NaN (dt >= 0 after softplus, A <= 0): no upper clamp needed */
INLINE vf v_exp2_nonpos(vf x) {
    const vi under = x < splat(-125.0f);
    const vf t = x + MAGIC;
    return pow2_parts(t, x - (t - MAGIC), under);
}

/* Tokens [t0, t1) of one block of w channels at c0, batch row bi, from state h (updated). */
INLINE void scan_tokens(const scan_args *a, int64_t bi, int64_t c0, int w, int64_t t0, int64_t t1,
                        blk *h, const blk *A, blk D, blk bias, int nonpos) {
    const int64_t n = a->n;
    const float *u = a->u + bi * a->u_sb + c0, *dl = a->delta + bi * a->dt_sb + c0;
    const float *z = a->z ? a->z + bi * a->z_sb + c0 : NULL;
    const float *B = a->B + bi * a->B_sb, *C = a->C + bi * a->C_sb;
    float *y = a->y + bi * a->y_sb + c0;
    for (int64_t t = t0; t < t1; t++) {
        const blk uv = load(u + t * a->u_st, w);
        blk dt = load(dl + t * a->dt_st, w), du, acc;
        EACH {
            dt.v[v] += bias.v[v];
            if (a->softplus) dt.v[v] = v_softplus(dt.v[v]);
            du.v[v] = dt.v[v] * uv.v[v];
            acc.v[v] = D.v[v] * uv.v[v];
        }
        const float *Bt = B + t * a->B_st, *Ct = C + t * a->C_st;
        if (nonpos) {
            for (int64_t k = 0; k < n; k++) {
                const float bk = Bt[k], ck = Ct[k];
                EACH {
                    h[k].v[v] = v_exp2_nonpos(dt.v[v] * A[k].v[v]) * h[k].v[v] + du.v[v] * bk;
                    acc.v[v] += h[k].v[v] * ck;
                }
            }
        } else {
            for (int64_t k = 0; k < n; k++) {
                const float bk = Bt[k], ck = Ct[k];
                EACH {
                    h[k].v[v] = v_exp2(dt.v[v] * A[k].v[v]) * h[k].v[v] + du.v[v] * bk;
                    acc.v[v] += h[k].v[v] * ck;
                }
            }
        }
        if (z) {
            const blk zv = load(z + t * a->z_st, w);
            EACH acc.v[v] *= v_silu(zv.v[v]);
        }
        store(y + t * a->y_st, acc, w);
    }
}

/* An item is a group of up to GROUP blocks of one batch row, walked in chunks of CHUNK tokens:
 * within a chunk the blocks of the group read neighbouring bytes of the same token rows, so the
 * rows' pages and cache lines are reused instead of being fetched once per block over the whole
 * sequence (a token row is several KB, a page per token). */
#define CHUNK 64
static int64_t scan_group(int64_t n) { return n >= 64 ? 1 : 64 / n < 8 ? 64 / n : 8; }

static void scan_work(const void *p, int64_t begin, int64_t end) {
    const scan_args *a = p;
    const int64_t n = a->n, d = a->d, nblk = (d + W - 1) / W, G = scan_group(n), ngrp = (nblk + G - 1) / G;
    blk h[G * n], A[G * n], D[G], bias[G];
    int nonpos[G];
    for (int64_t item = begin; item < end; item++) {
        const int64_t bi = item / ngrp, b0 = (item % ngrp) * G, nb = nblk - b0 < G ? nblk - b0 : G;
        for (int64_t g = 0; g < nb; g++) {
            const int64_t c0 = (b0 + g) * W;
            const int w = (int)(d - c0 < W ? d - c0 : W);
            nonpos[g] = a->softplus;
            for (int64_t k = 0; k < n; k++) {
                blk *Ak = &A[g * n + k];
                *Ak = gather(a->A + c0 * n + k, n, w);
                EACH {
                    for (int j = 0; j < VL; j++) nonpos[g] &= Ak->v[v][j] <= 0.0f;
                    Ak->v[v] *= 1.44269504088896341f; /* exp(dt A) = 2^(dt A log2 e) */
                }
                h[g * n + k] = a->h0 ? gather(a->h0 + (bi * d + c0) * n + k, n, w) : bsplat(0.0f);
            }
            D[g] = a->D ? load(a->D + c0, w) : bsplat(0.0f);
            bias[g] = a->dt_bias ? load(a->dt_bias + c0, w) : bsplat(0.0f);
        }
        for (int64_t t0 = 0; t0 < a->l; t0 += CHUNK) {
            const int64_t t1 = a->l - t0 < CHUNK ? a->l : t0 + CHUNK;
            for (int64_t g = 0; g < nb; g++) {
                const int64_t c0 = (b0 + g) * W;
                const int w = (int)(d - c0 < W ? d - c0 : W);
                scan_tokens(a, bi, c0, w, t0, t1, &h[g * n], &A[g * n], D[g], bias[g], nonpos[g]);
            }
        }
        for (int64_t g = 0; g < nb; g++) {
            const int64_t c0 = (b0 + g) * W;
            const int w = (int)(d - c0 < W ? d - c0 : W);
            for (int64_t k = 0; k < n; k++) scatter(a->h_out + (bi * d + c0) * n + k, n, h[g * n + k], w);
        }
    }
}

void ssc_selective_scan(int64_t b, int64_t l, int64_t d, int64_t n,
                        const float *u, int64_t u_sb, int64_t u_st,
                        const float *delta, int64_t dt_sb, int64_t dt_st,
                        const float *z, int64_t z_sb, int64_t z_st,
                        const float *B, int64_t B_sb, int64_t B_st,
                        const float *C, int64_t C_sb, int64_t C_st,
                        const float *A, const float *D, const float *dt_bias, int softplus,
                        const float *h0, float *y, int64_t y_sb, int64_t y_st, float *h_out, int threads) {
    scan_args a = {b, l, d, n, u, delta, z, B, C, A, D, dt_bias, h0,
                   u_sb, u_st, dt_sb, dt_st, z_sb, z_st, B_sb, B_st, C_sb, C_st, y_sb, y_st,
                   y, h_out, softplus};
    const int64_t G = scan_group(n);
    run_parallel(scan_work, &a, b * (((d + W - 1) / W + G - 1) / G), threads);
}

/* ---- depthwise causal conv continuing from the last k inputs -------------------------------
 * x [b, l, c] token-major (channel stride 1), w [c, k], bias [c] or NULL, s0 / s_out [b, c, k]
 * (the last k inputs, oldest first; s0 NULL = zeros), out [b, l, c]; silu on the output. */
typedef struct {
    int64_t b, l, c, k;
    const float *x, *w, *bias, *s0;
    int64_t x_sb, x_st, o_sb, o_st;
    float *out, *s_out;
    int silu;
} conv_args;

static void conv_work(const void *p, int64_t begin, int64_t end) {
    const conv_args *a = p;
    const int64_t c = a->c, k = a->k, nblk = (c + W - 1) / W;
    blk hist[k], wk[k];
    for (int64_t item = begin; item < end; item++) {
        const int64_t bi = item / nblk, c0 = (item % nblk) * W;
        const int w = (int)(c - c0 < W ? c - c0 : W);
        for (int64_t i = 0; i < k; i++) {
            wk[i] = gather(a->w + c0 * k + i, k, w);
            hist[i] = a->s0 ? gather(a->s0 + (bi * c + c0) * k + i, k, w) : bsplat(0.0f);
        }
        const blk bias = a->bias ? load(a->bias + c0, w) : bsplat(0.0f);
        const float *x = a->x + bi * a->x_sb + c0;
        float *out = a->out + bi * a->o_sb + c0;
        for (int64_t t = 0; t < a->l; t++) {
            for (int64_t i = 0; i + 1 < k; i++) hist[i] = hist[i + 1];
            hist[k - 1] = load(x + t * a->x_st, w);
            blk acc = bias;
            for (int64_t i = 0; i < k; i++) EACH acc.v[v] += wk[i].v[v] * hist[i].v[v];
            if (a->silu) EACH acc.v[v] = v_silu(acc.v[v]);
            store(out + t * a->o_st, acc, w);
        }
        for (int64_t i = 0; i < k; i++) scatter(a->s_out + (bi * c + c0) * k + i, k, hist[i], w);
    }
}

void ssc_causal_conv1d(int64_t b, int64_t l, int64_t c, int64_t k,
                       const float *x, int64_t x_sb, int64_t x_st,
                       const float *w, const float *bias, const float *s0,
                       float *out, int64_t o_sb, int64_t o_st, float *s_out, int silu, int threads) {
    conv_args a = {b, l, c, k, x, w, bias, s0, x_sb, x_st, o_sb, o_st, out, s_out, silu};
    run_parallel(conv_work, &a, b * ((c + W - 1) / W), threads);
}

/* ---- Mamba-2 (SSD) scan, sequential per head -------------------------------------------------
 * Per head h: dt_t = clamp(softplus(dt_t + dt_bias)), s_t = exp(dt_t * A_h) * s_{t-1}
 * + dt_t * x_t B_t^T, y_t = s_t C_t + D_h x_t. x [b, l, h, p] (p stride 1), dt [b, l, h],
 * B, C [b, l, g, n] (n stride 1), heads h map to group h / (h / g); s0, s_out [b, h, p, n];
 * y [b, l, h, p]. A block is W lanes of p; its state is held transposed ([n][W]) so that both the
 * update and the output are lane-wise multiply-adds, with no horizontal sums. */
typedef struct {
    int64_t b, l, h, p, g, n;
    const float *x, *dt, *A, *B, *C, *D, *dt_bias, *s0;
    int64_t x_sb, x_st, x_sh, dt_sb, dt_st, B_sb, B_st, B_sg, C_sb, C_st, C_sg, y_sb, y_st, y_sh;
    float *y, *s_out;
    float dt_min, dt_max;
    int softplus;
} ssd_args;


/* Tokens [t0, t1) of the block of w head dims at p0 of head hh, state s ([n] blocks), given each
 * token's dt and decay. */
INLINE void ssd_tokens(const ssd_args *a, int64_t bi, int64_t hh, int64_t p0, int w, int64_t t0, int64_t t1,
                       const float *dts, const float *decays, blk *s) {
    const int64_t n = a->n, gi = hh / (a->h / a->g);
    const float Dh = a->D ? a->D[hh] : 0.0f;
    const float *x = a->x + bi * a->x_sb + hh * a->x_sh + p0;
    const float *B = a->B + bi * a->B_sb + gi * a->B_sg, *C = a->C + bi * a->C_sb + gi * a->C_sg;
    float *y = a->y + bi * a->y_sb + hh * a->y_sh + p0;
    for (int64_t t = t0; t < t1; t++) {
        const float dt = dts[t - t0], decay = decays[t - t0];
        const blk xv = load(x + t * a->x_st, w);
        blk xdt, acc, acc2 = bsplat(0.0f);
        EACH {
            xdt.v[v] = xv.v[v] * dt;
            acc.v[v] = xv.v[v] * Dh;
        }
        const float *Bt = B + t * a->B_st, *Ct = C + t * a->C_st;
        int64_t k = 0;
        /* two partial sums: one chain of n dependent adds takes longer than the updates */
        for (; k + 1 < n; k += 2) {
            const float b0 = Bt[k], c0 = Ct[k], b1 = Bt[k + 1], c1 = Ct[k + 1];
            EACH {
                s[k].v[v] = s[k].v[v] * decay + xdt.v[v] * b0;
                acc.v[v] += s[k].v[v] * c0;
                s[k + 1].v[v] = s[k + 1].v[v] * decay + xdt.v[v] * b1;
                acc2.v[v] += s[k + 1].v[v] * c1;
            }
        }
        for (; k < n; k++) {
            const float bk = Bt[k], ck = Ct[k];
            EACH {
                s[k].v[v] = s[k].v[v] * decay + xdt.v[v] * bk;
                acc.v[v] += s[k].v[v] * ck;
            }
        }
        EACH acc.v[v] += acc2.v[v];
        store(y + t * a->y_st, acc, w);
    }
}

/* An item is one head of one batch row, walked in chunks of CHUNK tokens; within a chunk its blocks
 * of head dims share the token rows (x, B, C) and the per-token dt and decay, computed once. */
static void ssd_work(const void *p, int64_t begin, int64_t end) {
    const ssd_args *a = p;
    const int64_t n = a->n, P = a->p, nblk = (P + W - 1) / W;
    blk s[nblk * n];
    float dts[CHUNK], decays[CHUNK];
    for (int64_t item = begin; item < end; item++) {
        const int64_t bi = item / a->h, hh = item % a->h;
        const float Ah = a->A[hh], bias = a->dt_bias ? a->dt_bias[hh] : 0.0f;
        const float *dtp = a->dt + bi * a->dt_sb + hh;
        const float *s0 = a->s0 ? a->s0 + (bi * a->h + hh) * P * n : NULL;
        for (int64_t q = 0; q < nblk; q++) {
            const int w = (int)(P - q * W < W ? P - q * W : W);
            for (int64_t k = 0; k < n; k++) s[q * n + k] = s0 ? gather(s0 + q * W * n + k, n, w) : bsplat(0.0f);
        }
        for (int64_t t0 = 0; t0 < a->l; t0 += CHUNK) {
            const int64_t t1 = a->l - t0 < CHUNK ? a->l : t0 + CHUNK;
            for (int64_t t = t0; t < t1; t++) {
                float dt = dtp[t * a->dt_st] + bias;
                if (a->softplus) dt = softplus1(dt);
                dts[t - t0] = dt = dt < a->dt_min ? a->dt_min : (dt > a->dt_max ? a->dt_max : dt);
                decays[t - t0] = exp1(dt * Ah);
            }
            for (int64_t q = 0; q < nblk; q++) {
                const int w = (int)(P - q * W < W ? P - q * W : W);
                ssd_tokens(a, bi, hh, q * W, w, t0, t1, dts, decays, &s[q * n]);
            }
        }
        float *so = a->s_out + (bi * a->h + hh) * P * n;
        for (int64_t q = 0; q < nblk; q++) {
            const int w = (int)(P - q * W < W ? P - q * W : W);
            for (int64_t k = 0; k < n; k++) scatter(so + q * W * n + k, n, s[q * n + k], w);
        }
    }
}

void ssc_ssd_scan(int64_t b, int64_t l, int64_t h, int64_t p, int64_t g, int64_t n,
                  const float *x, int64_t x_sb, int64_t x_st, int64_t x_sh,
                  const float *dt, int64_t dt_sb, int64_t dt_st,
                  const float *A,
                  const float *B, int64_t B_sb, int64_t B_st, int64_t B_sg,
                  const float *C, int64_t C_sb, int64_t C_st, int64_t C_sg,
                  const float *D, const float *dt_bias, int softplus, float dt_min, float dt_max,
                  const float *s0, float *y, int64_t y_sb, int64_t y_st, int64_t y_sh, float *s_out, int threads) {
    ssd_args a = {b, l, h, p, g, n, x, dt, A, B, C, D, dt_bias, s0,
                  x_sb, x_st, x_sh, dt_sb, dt_st, B_sb, B_st, B_sg, C_sb, C_st, C_sg, y_sb, y_st, y_sh,
                  y, s_out, dt_min, dt_max, softplus};
    run_parallel(ssd_work, &a, b * h, threads);
}
