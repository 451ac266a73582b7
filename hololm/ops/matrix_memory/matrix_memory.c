/* Fused CPU kernels of the gated matrix memory's intra-chunk decay mask
 * (hololm/ops/matrix_memory/ has the math and the PyTorch form these replace). For each block
 * of C×C query-key scores S (row t reads, column s wrote), with n = t − s − shift gates between:
 *
 *     P[t, s] = S[t, s] · exp(Gq[t] − G[s])    n > 0   (the difference taken in float64)
 *             = S[t, s]                        n = 0   (no gate: a constant weight of 1)
 *             = 0                              n < 0   (the future)
 *
 * One pass instead of the five that eager PyTorch makes over [.., C, C] arrays (difference,
 * cast, mask, exp, product). The backward recomputes the weights:
 *     ∂L/∂S = ∂L/∂P · w,   l = ∂L/∂P · P (n > 0),   ∂L/∂Gq[t] = Σ_s l,   ∂L/∂G[s] = −Σ_t l,
 * the sums in float64.
 *
 * Layouts (contiguous): scores, out, grad_out, grad_scores float32 [M, C, C]; gq, g, grad_gq,
 * grad_g float64 [M, C]. Each call covers blocks [b0, b1) (`run_split` with one channel of
 * C·C steps per block; the work buffer is unused).
 */
#include <stdint.h>

#include "exp_f32.h"

static inline float weight(double gq_t, double g_s, int64_t n) {
    float decay = exp_f32((float)(gq_t - g_s));
    return n > 0 ? decay : (n == 0 ? 1.0f : 0.0f);
}

void decay_mask_forward(const float *scores, const double *gq, const double *g, float *out,
                        int64_t chunk, int64_t shift, float *work, int64_t B, int64_t T,
                        int64_t C, int64_t b0, int64_t b1, int64_t c0, int64_t c1) {
    for (int64_t m = b0; m < b1; m++) {
        const double *g_m = g + m * chunk;
        for (int64_t t = 0; t < chunk; t++) {
            const int64_t row = (m * chunk + t) * chunk;
            const double gq_t = gq[m * chunk + t];
#pragma omp simd
            for (int64_t s = 0; s < chunk; s++)
                out[row + s] = scores[row + s] * weight(gq_t, g_m[s], t - s - shift);
        }
    }
}

void decay_mask_backward(const float *scores, const double *gq, const double *g,
                         const float *grad_out, float *grad_scores, double *grad_gq,
                         double *grad_g, int64_t chunk, int64_t shift, float *work, int64_t B,
                         int64_t T, int64_t C, int64_t b0, int64_t b1, int64_t c0, int64_t c1) {
    for (int64_t m = b0; m < b1; m++) {
        const double *g_m = g + m * chunk;
        double *grad_g_m = grad_g + m * chunk;
        for (int64_t s = 0; s < chunk; s++)
            grad_g_m[s] = 0.0;
        for (int64_t t = 0; t < chunk; t++) {
            const int64_t row = (m * chunk + t) * chunk;
            const double gq_t = gq[m * chunk + t];
            double row_sum = 0.0;
#pragma omp simd reduction(+ : row_sum)
            for (int64_t s = 0; s < chunk; s++) {
                const int64_t n = t - s - shift;
                const float w = weight(gq_t, g_m[s], n);
                const float dp = grad_out[row + s];
                grad_scores[row + s] = dp * w;
                const double l = n > 0 ? (double)(dp * scores[row + s] * w) : 0.0;
                row_sum += l;
                grad_g_m[s] -= l;
            }
            grad_gq[m * chunk + t] = row_sum;
        }
    }
}
