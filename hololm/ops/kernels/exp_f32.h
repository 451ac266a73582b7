/* Shared by the kernels that exponentiate log decays (included, so that it inlines). */
#ifndef HOLOLM_EXP_F32_H
#define HOLOLM_EXP_F32_H

#include <stdint.h>

/* exp(x) as 2^k · exp(r), |r| <= ln2 / 2, with a two-constant Cody–Waite split and Cephes'
 * degree-6 polynomial (~1 float32 ulp). Results below the smallest normal float flush to 0
 * (torch returns a subnormal there); NaN propagates. Branch-free, so it vectorises. */
static inline float exp_f32(float x) {
    float c = x < -104.0f ? -104.0f : (x > 88.5f ? 88.5f : x);
    float k = __builtin_rintf(c * 1.44269504088896341f);
    float r = c - k * 0.693359375f;
    r = r - k * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int ki = (int)k;
    union { int32_t i; float f; } two_k;
    two_k.i = (int32_t)((uint32_t)(ki + 127) << 23);  /* unused (flushed) when ki < -126 */
    float y = ki < -126 ? 0.0f : p * two_k.f;
    return x != x ? x : y;
}

#endif
