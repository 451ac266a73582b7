/* Fused CPU kernels of the gated diagonal scan h_t = exp(log γ_t) ⊙ h_{t-1} + x_t
 * (hololm/ops/diagonal_scan/ has the math and the PyTorch form these replace): one pass over
 * time, vectorised across the C = H·D contiguous channels of a row, the state in a work row.
 * Only log γ_t itself is exponentiated, as in the reference loop. A reset step (packed
 * documents) takes γ_t = 0 instead: h_t = x_t, and no gradient reaches log γ_t or h_{t-1}.
 *
 * Layouts (float32, contiguous): x, log_decay, h, grad_h, dx, dlog [B, T, C]; h0, dh0 [B, C];
 * reset [B, T] bool bytes, or NULL for none; work [2, C] (one per call). Each call covers batch rows [b0, b1) and channels [c0, c1), so
 * callers can split the work over threads.
 */
#include <stdint.h>
#include <string.h>

#include "exp_f32.h"

void diagonal_scan_forward(const float *x, const float *log_decay, const float *h0,
                           const uint8_t *reset, float *h, float *work, int64_t B, int64_t T,
                           int64_t C, int64_t b0, int64_t b1, int64_t c0, int64_t c1) {
    const int64_t n = c1 - c0;
    float *s = work + c0;
    for (int64_t b = b0; b < b1; b++) {
        memcpy(s, h0 + b * C + c0, n * sizeof(float));
        for (int64_t t = 0; t < T; t++) {
            const int64_t row = (b * T + t) * C + c0;
            if (reset != NULL && reset[b * T + t]) {  /* the state is dropped, not scaled by 0 */
#pragma omp simd
                for (int64_t j = 0; j < n; j++) {
                    s[j] = x[row + j];
                    h[row + j] = s[j];
                }
                continue;
            }
#pragma omp simd
            for (int64_t j = 0; j < n; j++) {
                s[j] = exp_f32(log_decay[row + j]) * s[j] + x[row + j];
                h[row + j] = s[j];
            }
        }
    }
}

/* The same scan backwards in time:
 *   g_t = ∂L/∂h_t + γ_{t+1} g_{t+1},  ∂L/∂x_t = g_t,  ∂L/∂log γ_t = g_t γ_t h_{t-1},
 *   ∂L/∂h0 = γ_0 g_0, with γ_t = 0 at a reset. */
void diagonal_scan_backward(const float *log_decay, const float *h, const float *h0,
                            const uint8_t *reset, const float *grad_h, float *dx, float *dlog,
                            float *dh0, float *work, int64_t B, int64_t T, int64_t C,
                            int64_t b0, int64_t b1, int64_t c0, int64_t c1) {
    const int64_t n = c1 - c0;
    float *g = work + c0, *gamma_next = work + C + c0;
    for (int64_t b = b0; b < b1; b++) {
        memset(g, 0, n * sizeof(float));
        memset(gamma_next, 0, n * sizeof(float));
        for (int64_t t = T - 1; t >= 0; t--) {
            const int64_t row = (b * T + t) * C + c0;
            const float *prev = t > 0 ? h + row - C : h0 + b * C + c0;
            const int fresh = reset != NULL && reset[b * T + t];
#pragma omp simd
            for (int64_t j = 0; j < n; j++) {
                float gamma = fresh ? 0.0f : exp_f32(log_decay[row + j]);
                g[j] = grad_h[row + j] + gamma_next[j] * g[j];
                dx[row + j] = g[j];
                dlog[row + j] = g[j] * gamma * prev[j];
                gamma_next[j] = gamma;
            }
        }
#pragma omp simd
        for (int64_t j = 0; j < n; j++)
            dh0[b * C + c0 + j] = gamma_next[j] * g[j];
    }
}
