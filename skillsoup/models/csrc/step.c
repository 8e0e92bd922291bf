/* Decode kernels: one token per batch row. The state rows are contiguous over the state size n, so
 * here the vectors run along n (and a horizontal sum gives each output), the opposite of scan.c,
 * which runs along channels and walks time.
 *
 * ssc_selective_state_update / ssc_ssd_state_update have the contracts of ops.py's
 * selective_state_update / ssd_state_update. ssc_mamba1_step / ssc_mamba2_step fuse everything a
 * Mamba / Mamba-2 mixer does between its in_proj and its out_proj (conv window update, conv, silu,
 * x_proj and dt_proj for Mamba-1, the state update, D, the gate or the gated RMSNorm for Mamba-2)
 * into one call, as mamba1.step / mamba2.step do with separate PyTorch ops. ssc_add_rms_norm is the
 * glue between two layers (the residual add and the next pre-norm), step_ops.add_rms_norm's twin. */
#include <math.h>

#include "common.h"

INLINE vf loadv(const float *p, int64_t w) { /* w <= VL lanes, zeros beyond */
    vf v = {0};
    if (w >= VL) memcpy(&v, p, sizeof v);
    else for (int64_t j = 0; j < w; j++) v[j] = p[j];
    return v;
}

INLINE void storev(float *p, vf v, int64_t w) {
    if (w >= VL) memcpy(p, &v, sizeof v);
    else for (int64_t j = 0; j < w; j++) p[j] = v[j];
}

INLINE float hsum(vf v) { /* the 128-bit quarters added as vectors, then four lanes pairwise */
    typedef float vq __attribute__((vector_size(4 * sizeof(float))));
    vq s;
    memcpy(&s, &v, sizeof s);
    for (int q = 1; q < VL / 4; q++) {
        vq part;
        memcpy(&part, (const char *)&v + q * sizeof part, sizeof part);
        s += part;
    }
    return (s[0] + s[2]) + (s[1] + s[3]);
}

static float dot(const float *a, const float *b, int64_t n) {
    vf acc[4] = {{0}};
    int64_t j = 0;
    for (; j + 4 * VL <= n; j += 4 * VL)
        for (int q = 0; q < 4; q++) acc[q] += loadv(a + j + q * VL, VL) * loadv(b + j + q * VL, VL);
    for (; j < n; j += VL) acc[0] += loadv(a + j, n - j) * loadv(b + j, n - j);
    return hsum(acc[0] + acc[1] + acc[2] + acc[3]);
}

/* x [c] -> silu(x) in place, or softplus(x + bias) when bias is given */
static void silu_inplace(float *x, int64_t c) {
    for (int64_t j = 0; j < c; j += VL) storev(x + j, v_silu(loadv(x + j, c - j)), c - j);
}

static void softplus_bias(float *dt, const float *src, const float *bias, int softplus, int64_t c) {
    for (int64_t j = 0; j < c; j += VL) {
        vf v = loadv(src + j, c - j) + (bias ? loadv(bias + j, c - j) : splat(0.0f));
        storev(dt + j, softplus ? v_softplus(v) : v, c - j);
    }
}

/* Channels [c0, c1) of one Mamba-1 token, one channel at a time, its n states along the vector
 * (w < VL lanes of the last vector when n is not a multiple of VL).
 * h_out[c] = exp(dt_c A[c]) h_in[c] + dt_c x_c B;  y_c = h_out[c] . C + D_c x_c. */
static void m1_channels(int64_t c0, int64_t c1, int64_t n, const float *x, const float *dt, const float *B,
                        const float *C, const float *A, const float *D, const float *h_in, float *h_out, float *y) {
    for (int64_t c = c0; c < c1; c++) {
        const vf dtv = splat(dt[c] * 1.44269504088896341f), du = splat(dt[c] * x[c]);
        vf acc = splat(0.0f);
        for (int64_t j = 0; j < n; j += VL) {
            const int64_t w = n - j;
            const vf e = v_exp2(dtv * loadv(A + c * n + j, w));
            const vf h = e * loadv(h_in + c * n + j, w) + du * loadv(B + j, w);
            storev(h_out + c * n + j, h, w);
            acc += h * loadv(C + j, w);
        }
        y[c] = hsum(acc) + (D ? D[c] * x[c] : 0.0f);
    }
}

/* The sum of lanes [q0 * 4, (q0 + nq) * 4) of v: its 128-bit quarters q0.. added, then four lanes */
INLINE float quarters_sum(vf v, int q0, int nq) {
    typedef float vq __attribute__((vector_size(4 * sizeof(float))));
    vq s, part;
    memcpy(&s, (const char *)&v + q0 * sizeof s, sizeof s);
    for (int q = 1; q < nq; q++) {
        memcpy(&part, (const char *)&v + (q0 + q) * sizeof part, sizeof part);
        s += part;
    }
    return (s[0] + s[2]) + (s[1] + s[3]);
}

/* m1_channels for a state size n below the vector width (n a multiple of 4 dividing VL: the demo
 * model's 8 states under AVX-512): g = VL / n channels share one vector, so A, h_in and h_out are
 * whole-vector loads and stores (their [c, n] rows are contiguous), where lane-by-lane partial
 * vectors cost three times the whole update. Channels [0, d - d % g); returns where it stopped. */
static int64_t m1_channels_packed(int64_t d, int64_t n, const float *x, const float *dt, const float *B,
                                  const float *C, const float *A, const float *D, const float *h_in,
                                  float *h_out, float *y) {
    const int64_t g = VL / n;
    vf Bv, Cv;
    vi lane_channel; /* which of the g channels a lane belongs to */
    for (int l = 0; l < VL; l++) {
        Bv[l] = B[l % n];
        Cv[l] = C[l % n];
        lane_channel[l] = (int32_t)(l / n);
    }
    int64_t c = 0;
    for (; c + g <= d; c += g) {
        vf dtv = splat(dt[c] * 1.44269504088896341f), du = splat(dt[c] * x[c]);
        for (int64_t i = 1; i < g; i++) {
            const vi mine = lane_channel == (vi){0} + (int32_t)i;
            dtv = blend(mine, splat(dt[c + i] * 1.44269504088896341f), dtv);
            du = blend(mine, splat(dt[c + i] * x[c + i]), du);
        }
        vf a, h;
        memcpy(&a, A + c * n, sizeof a);
        memcpy(&h, h_in + c * n, sizeof h);
        h = v_exp2(dtv * a) * h + du * Bv;
        memcpy(h_out + c * n, &h, sizeof h);
        const vf hc = h * Cv;
        for (int64_t i = 0; i < g; i++)
            y[c + i] = quarters_sum(hc, (int)(i * n / 4), (int)(n / 4)) + (D ? D[c + i] * x[c + i] : 0.0f);
    }
    return c;
}

/* One Mamba-1 token for channels [0, d) of one row; dt already has its bias and softplus.
 * h_out[c] = exp(dt_c A[c]) h_in[c] + dt_c x_c B;  y_c = (h_out[c] . C + D_c x_c) silu(z_c). */
static void m1_update(int64_t d, int64_t n, const float *x, const float *dt, const float *z,
                      const float *B, const float *C, const float *A, const float *D,
                      const float *h_in, float *h_out, float *y) {
    int64_t c = 0;
    if (n < VL && VL % n == 0 && n % 4 == 0)
        c = m1_channels_packed(d, n, x, dt, B, C, A, D, h_in, h_out, y);
    m1_channels(c, d, n, x, dt, B, C, A, D, h_in, h_out, y);
    if (z)
        for (int64_t j = 0; j < d; j += VL) storev(y + j, loadv(y + j, d - j) * v_silu(loadv(z + j, d - j)), d - j);
}

void ssc_selective_state_update(int64_t b, int64_t d, int64_t n,
                                const float *x, int64_t x_sb, const float *dt, int64_t dt_sb,
                                const float *z, int64_t z_sb, const float *B, int64_t B_sb,
                                const float *C, int64_t C_sb, const float *A, const float *D,
                                const float *dt_bias, int softplus, const float *h_in, float *h_out, float *y) {
    float dtr[d];
    for (int64_t r = 0; r < b; r++) {
        softplus_bias(dtr, dt + r * dt_sb, dt_bias, softplus, d);
        m1_update(d, n, x + r * x_sb, dtr, z ? z + r * z_sb : NULL, B + r * B_sb, C + r * C_sb, A, D,
                  h_in + r * d * n, h_out + r * d * n, y + r * d);
    }
}

/* conv window [c, k] (oldest first) shifted by one new input; out = silu(conv + bias) */
static void conv_step(int64_t c, int64_t k, const float *x, const float *win_in, float *win_out,
                      const float *w, const float *bias, float *out) {
    for (int64_t i = 0; i < c; i++) {
        float acc = bias ? bias[i] : 0.0f;
        for (int64_t j = 0; j + 1 < k; j++) {
            win_out[i * k + j] = win_in[i * k + j + 1];
            acc += w[i * k + j] * win_out[i * k + j];
        }
        win_out[i * k + k - 1] = x[i];
        out[i] = acc + w[i * k + k - 1] * x[i];
    }
    silu_inplace(out, c);
}

#define TILE 4 /* batch rows per pass over x_proj's and dt_proj's weights (at mamba-130m's shape 786 KB
                      a layer, more than L2): each weight row is read once per tile and used from L1 */

/* Mamba-1 mixer between in_proj and out_proj, one token per row. xz [b, 2d] (x then the gate z),
 * conv windows [b, d, k], conv_w [d, k], xproj_w [r + 2n, d], dtproj_wt [r, d] (dt_proj's weight
 * transposed, so that dt is r vector multiply-adds along d instead of d horizontal sums), A [d, n],
 * h [b, d, n] -> y [b, d]. */
void ssc_mamba1_step(int64_t b, int64_t d, int64_t n, int64_t r, int64_t k,
                     const float *xz, int64_t xz_sb, const float *conv_in, float *conv_out,
                     const float *conv_w, const float *conv_b, const float *xproj_w,
                     const float *dtproj_wt, const float *dt_bias, const float *A, const float *D,
                     const float *h_in, float *h_out, float *y) {
    const int64_t m = r + 2 * n;
    float xc[TILE][d], dt[TILE][d], dbc[TILE][m];
    for (int64_t r0 = 0; r0 < b; r0 += TILE) {
        const int64_t rows = b - r0 < TILE ? b - r0 : TILE;
        for (int64_t t = 0; t < rows; t++) {
            const int64_t row = r0 + t;
            conv_step(d, k, xz + row * xz_sb, conv_in + row * d * k, conv_out + row * d * k, conv_w, conv_b, xc[t]);
            memset(dt[t], 0, sizeof dt[t]);
        }
        for (int64_t j = 0; j < m; j++)
            for (int64_t t = 0; t < rows; t++) dbc[t][j] = dot(xproj_w + j * d, xc[t], d);
        for (int64_t j = 0; j < r; j++)
            for (int64_t t = 0; t < rows; t++) {
                const vf s = splat(dbc[t][j]);
                const float *w = dtproj_wt + j * d;
                for (int64_t c = 0; c < d; c += VL)
                    storev(dt[t] + c, loadv(dt[t] + c, d - c) + s * loadv(w + c, d - c), d - c);
            }
        for (int64_t t = 0; t < rows; t++) {
            const int64_t row = r0 + t;
            softplus_bias(dt[t], dt[t], dt_bias, 1, d);
            m1_update(d, n, xc[t], dt[t], xz + row * xz_sb + d, dbc[t] + r, dbc[t] + r + n, A, D, h_in + row * d * n,
                      h_out + row * d * n, y + row * d);
        }
    }
}

/* One Mamba-2 token for the heads of one row: dt [h] already has bias, softplus and clamp.
 * s_out[h, p] = exp(dt_h A_h) s_in[h, p] + dt_h x[h, p] B[g(h)];  y[h, p] = s_out[h, p] . C[g(h)] + D_h x[h, p]. */
static void m2_update(int64_t h, int64_t p, int64_t g, int64_t n, const float *x, const float *dt,
                      const float *B, int64_t B_sg, const float *C, int64_t C_sg, const float *A,
                      const float *D, const float *s_in, float *s_out, float *y) {
    for (int64_t hh = 0; hh < h; hh++) {
        const int64_t gi = hh / (h / g);
        const float *Bg = B + gi * B_sg, *Cg = C + gi * C_sg;
        const vf decay = splat(exp1(dt[hh] * A[hh]));
        for (int64_t i = 0; i < p; i++) {
            const int64_t row = hh * p + i;
            const vf coef = splat(dt[hh] * x[row]);
            vf acc = splat(0.0f);
            for (int64_t j = 0; j < n; j += VL) {
                const vf s = decay * loadv(s_in + row * n + j, n - j) + coef * loadv(Bg + j, n - j);
                storev(s_out + row * n + j, s, n - j);
                acc += s * loadv(Cg + j, n - j);
            }
            y[row] = hsum(acc) + (D ? D[hh] * x[row] : 0.0f);
        }
    }
}

static void m2_dt(int64_t h, const float *src, const float *bias, int softplus, float lo, float hi, float *dt) {
    softplus_bias(dt, src, bias, softplus, h);
    for (int64_t i = 0; i < h; i++) dt[i] = dt[i] < lo ? lo : (dt[i] > hi ? hi : dt[i]);
}

/* x [b, h, p], dt [b, h], B / C [b, g, n] (rows of g groups, n stride 1), s [b, h, p, n] */
void ssc_ssd_state_update(int64_t b, int64_t h, int64_t p, int64_t g, int64_t n,
                          const float *x, int64_t x_sb, const float *dt, int64_t dt_sb,
                          const float *B, int64_t B_sb, int64_t B_sg, const float *C, int64_t C_sb, int64_t C_sg,
                          const float *A, const float *D, const float *dt_bias, int softplus, float dt_min,
                          float dt_max, const float *s_in, float *s_out, float *y) {
    float dtr[h];
    for (int64_t r = 0; r < b; r++) {
        m2_dt(h, dt + r * dt_sb, dt_bias, softplus, dt_min, dt_max, dtr);
        m2_update(h, p, g, n, x + r * x_sb, dtr, B + r * B_sb, B_sg, C + r * C_sb, C_sg, A, D,
                  s_in + r * h * p * n, s_out + r * h * p * n, y + r * h * p);
    }
}

/* Mamba-2 mixer between in_proj and out_proj, one token per row. proj [b, d + cd + h] holds the
 * gate [d], xBC [cd = d + 2 g n] and dt [h]; conv windows [b, cd, k]; s [b, h, p, n] -> y [b, d]:
 * the gated RMSNorm (norm_before_gate=False) of the scan's output, groups of `group` channels. */
void ssc_mamba2_step(int64_t b, int64_t h, int64_t p, int64_t g, int64_t n, int64_t k,
                     const float *proj, int64_t proj_sb, const float *conv_in, float *conv_out,
                     const float *conv_w, const float *conv_b, const float *A, const float *D,
                     const float *dt_bias, float dt_min, float dt_max, const float *s_in, float *s_out,
                     const float *norm_w, int64_t group, float eps, float *y) {
    const int64_t d = h * p, cd = d + 2 * g * n;
    float xbc[cd], dt[h];
    for (int64_t row = 0; row < b; row++) {
        const float *gate = proj + row * proj_sb, *out_row;
        conv_step(cd, k, gate + d, conv_in + row * cd * k, conv_out + row * cd * k, conv_w, conv_b, xbc);
        m2_dt(h, gate + d + cd, dt_bias, 1, dt_min, dt_max, dt);
        float *yr = y + row * d;
        m2_update(h, p, g, n, xbc, dt, xbc + d, n, xbc + d + g * n, n, A, D, s_in + row * h * p * n,
                  s_out + row * h * p * n, yr);
        out_row = yr;
        for (int64_t j = 0; j < d; j += VL)
            storev(yr + j, loadv(out_row + j, d - j) * v_silu(loadv(gate + j, d - j)), d - j);
        for (int64_t g0 = 0; g0 < d; g0 += group) {
            const float ms = dot(yr + g0, yr + g0, group) / (float)group;
            const float scale = 1.0f / sqrtf(ms + eps);
            for (int64_t j = g0; j < g0 + group; j++) yr[j] = norm_w[j] * (yr[j] * scale);
        }
    }
}

/* The residual add of a layer's output and the next RMSNorm (transformers' MambaRMSNorm, float32):
 * residual [b, c] += out [b, c] (when out is given), in place; normed [b, c] = weight * (residual *
 * 1 / sqrt(mean(residual^2) + eps)), in the reference's order of operations. Rows are contiguous. */
void ssc_add_rms_norm(int64_t b, int64_t c, float *residual, const float *out, const float *weight, float eps,
                      float *normed) {
    for (int64_t row = 0; row < b; row++) {
        float *x = residual + row * c, *o = normed + row * c;
        if (out)
            for (int64_t j = 0; j < c; j += VL)
                storev(x + j, loadv(x + j, c - j) + loadv(out + row * c + j, c - j), c - j);
        const vf scale = splat(1.0f / sqrtf(dot(x, x, c) / (float)c + eps));
        for (int64_t j = 0; j < c; j += VL)
            storev(o + j, loadv(weight + j, c - j) * (loadv(x + j, c - j) * scale), c - j);
    }
}
