// The bf16 tile kernels (layouts in pt_bf16.h). Each path's instructions are enabled per function
// (target attributes), so the file builds for any x86-64 and a path runs only where
// pt_bf16_paths says the CPU and the OS have it.
#include "pt_bf16.h"
#include <cpuid.h>
#include <float.h>
#include <immintrin.h>
#include <math.h>
#include <pthread.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

static unsigned long long xcr0(void) {
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}

static int detect(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return 0;  // no OSXSAVE: no XCR0
    unsigned long long os = xcr0();
    if (__get_cpuid_max(0, 0) < 7) return 0;
    __cpuid_count(7, 0, a, b, c, d);
    int avx512f = (b >> 16) & 1, amxBF16 = (d >> 22) & 1, amxTile = (d >> 24) & 1;
    unsigned a1, b1, c1, d1;
    __cpuid_count(7, 1, a1, b1, c1, d1);
    int avx512BF16 = (a1 >> 5) & 1;
    int paths = 0;
    // XCR0: SSE, AVX, opmask and both halves of the zmm state enabled by the OS.
    if (avx512f && avx512BF16 && (os & 0xE6) == 0xE6) paths |= PT_BF16_AVX512;
    // AMX: XTILECFG and XTILEDATA in XCR0, and Linux's permission for this process's tiles.
    if (amxTile && amxBF16 && (os & (3ull << 17)) == (3ull << 17) && (os & 0xE6) == 0xE6 &&
        syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0)
        paths |= PT_BF16_AMX;
    return paths;
}

static pthread_once_t detected = PTHREAD_ONCE_INIT;
static int paths, wide;
static void detectAll(void) {
    paths = detect();
    // The AVX-512 packers use BW and VL instructions.
    wide = __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
}

int pt_bf16_paths(void) {
    pthread_once(&detected, detectAll);
    return paths;
}

static int hasAVX512BW(void) {
    pthread_once(&detected, detectAll);
    return wide;
}

// ReLU as the fp32 GEMM applies it: a negative value becomes 0 (-0 and NaN stay).
__attribute__((target("avx512f")))
static inline __m512 reluOf(__m512 v) {
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LT_OQ), v, _mm512_setzero_ps());
}

// ---- AMX: 2 x 2 tiles of 16 x 16 fp32 (tmm0-3), A in tmm4-5, B in tmm6-7 ----
typedef struct { uint8_t palette, start; uint8_t reserved[14]; uint16_t colsb[16]; uint8_t rows[16]; } TileConfig;

__attribute__((target("amx-tile,amx-bf16,avx512f")))
static void epilogue512(float *c, long ldc, const float *bias, int relu, int rows, int halves) {
    for (int r = 0; r < rows; r++) {
        for (int h = 0; h < halves; h++) {
            __m512 v = _mm512_loadu_ps(c + r * ldc + 16 * h);
            if (bias) v = _mm512_add_ps(v, _mm512_loadu_ps(bias + 16 * h));
            if (relu) v = reluOf(v);
            _mm512_storeu_ps(c + r * ldc + 16 * h, v);
        }
    }
}

// Loaded at the start of every GEMM that uses the tiles (cheap, and right even if other code on the
// thread configured or released them since); Linux keeps a thread's tile state across switches.
__attribute__((target("amx-tile,amx-bf16")))
void pt_bf16_amx_configure(void) {
    TileConfig cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) { cfg.colsb[t] = 64; cfg.rows[t] = 16; }
    _tile_loadconfig(&cfg);
}

// One C tile of 32 or 16 rows (`tall`) by 32 or 16 columns (`wide`): C tiles 0 (rows 0-15, columns
// 0-15), 1 (columns 16-31), 2 (rows 16-31), 3; a tile outside the shape is neither loaded nor
// computed. A GEMM's last row panel of 16 rows or fewer, or a C of 16 columns (a 16-channel
// conv), takes half or a quarter of the products. Each element's products are the same whatever
// the shape, so its bits.
__attribute__((target("amx-tile,amx-bf16,avx512f"), always_inline))
static inline void amxTile(int blocks, const uint16_t *a, const long *offsets, long lda, const uint16_t *b,
                           float *c, long ldc, int load, const float *bias, int relu, const int tall, const int wide) {
    long sc = ldc * 4, sa = lda * 2;
    if (load) {
        _tile_loadd(0, c, sc);
        if (wide) _tile_loadd(1, c + 16, sc);
        if (tall) _tile_loadd(2, c + 16 * ldc, sc);
        if (tall && wide) _tile_loadd(3, c + 16 * ldc + 16, sc);
    } else {
        _tile_zero(0);
        if (wide) _tile_zero(1);
        if (tall) _tile_zero(2);
        if (tall && wide) _tile_zero(3);
    }
    for (int kb = 0; kb < blocks; kb++) {
        // B streams from memory when it is a packed weight matrix read once (a dense layer's
        // forward): tile loads alone wait on each miss, so fetch two k-blocks (4 KB) ahead.
        // (As an integer: past B's last block the address is only a hint, never a pointer.)
        uintptr_t ahead = (uintptr_t)b + (uintptr_t)(kb + 2) * 2048;
        for (int line = 0; line < (wide ? 2048 : 1024); line += 64) _mm_prefetch((const char *)(ahead + line), _MM_HINT_T0);
        // Each load just before the first product that needs it, so the other loads overlap the
        // products already issued (tiles are not renamed): measured 3-10% faster on most of the
        // step's GEMMs than all four loads first. The products' order, so the bits, is unchanged.
        const uint16_t *ak = a + (offsets ? offsets[kb] : kb * 32);
        _tile_loadd(4, ak, sa);
        _tile_loadd(6, b + kb * 1024, 64);
        _tile_dpbf16ps(0, 4, 6);
        if (wide) {
            _tile_loadd(7, b + kb * 1024 + 512, 64);
            _tile_dpbf16ps(1, 4, 7);
        }
        if (tall) {
            _tile_loadd(5, ak + 16 * lda, sa);
            _tile_dpbf16ps(2, 5, 6);
            if (wide) _tile_dpbf16ps(3, 5, 7);
        }
    }
    _tile_stored(0, c, sc);
    if (wide) _tile_stored(1, c + 16, sc);
    if (tall) _tile_stored(2, c + 16 * ldc, sc);
    if (tall && wide) _tile_stored(3, c + 16 * ldc + 16, sc);
    if (bias || relu) epilogue512(c, ldc, bias, relu, tall ? 32 : 16, wide ? 2 : 1);
}

__attribute__((target("amx-tile,amx-bf16,avx512f")))
void pt_bf16_tile_amx(int blocks, const uint16_t *a, const long *offsets, long lda, const uint16_t *b,
                      float *c, long ldc, int load, const float *bias, int relu, int rows, int cols) {
    if (rows > 16 && cols > 16) amxTile(blocks, a, offsets, lda, b, c, ldc, load, bias, relu, 1, 1);
    else if (rows > 16) amxTile(blocks, a, offsets, lda, b, c, ldc, load, bias, relu, 1, 0);
    else if (cols > 16) amxTile(blocks, a, offsets, lda, b, c, ldc, load, bias, relu, 0, 1);
    else amxTile(blocks, a, offsets, lda, b, c, ldc, load, bias, relu, 0, 0);
}

// ---- AVX512-BF16: a strip of R rows x W 16-column halves of accumulators (16 zmm) at a time ----
// The strip's shape changes which products share a register pass, never an element's sums: each
// is C (or 0), then every k-pair in order, so every shape gives the same bits.
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"), always_inline))
static inline void avx512Strip(const int R, const int W, int blocks, const uint16_t *a, const long *offsets, long lda,
                               const uint16_t *b, float *c, long ldc, int load, const float *bias, int relu) {
    __m512 acc[16][2];
    for (int r = 0; r < R; r++) {
        for (int h = 0; h < W; h++) acc[r][h] = load ? _mm512_loadu_ps(c + r * ldc + 16 * h) : _mm512_setzero_ps();
    }
    for (int kb = 0; kb < blocks; kb++) {
        const uint16_t *bk = b + kb * 1024, *ak = a + (offsets ? offsets[kb] : kb * 32);
        for (int p = 0; p < 16; p++) {
            __m512bh b0 = (__m512bh)_mm512_loadu_si512(bk + p * 32), b1 = b0;
            if (W == 2) b1 = (__m512bh)_mm512_loadu_si512(bk + 512 + p * 32);
            for (int r = 0; r < R; r++) {
                int32_t pair;
                memcpy(&pair, ak + r * lda + 2 * p, 4);
                __m512bh av = (__m512bh)_mm512_set1_epi32(pair);
                acc[r][0] = _mm512_dpbf16_ps(acc[r][0], av, b0);
                if (W == 2) acc[r][1] = _mm512_dpbf16_ps(acc[r][1], av, b1);
            }
        }
    }
    for (int r = 0; r < R; r++) {
        for (int h = 0; h < W; h++) {
            __m512 v = acc[r][h];
            if (bias) v = _mm512_add_ps(v, _mm512_loadu_ps(bias + 16 * h));
            if (relu) v = reluOf(v);
            _mm512_storeu_ps(c + r * ldc + 16 * h, v);
        }
    }
}

// Only the strips that hold C's first `rows` rows, and only the first half where `cols` <= 16 (a
// 16-channel conv's C, a last panel): the rest of the 32 x 32 is left as it was. A half-width
// strip takes 16 rows where 9 or more remain, so it keeps 16 independent sums in flight.
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
void pt_bf16_tile_avx512(int blocks, const uint16_t *a, const long *offsets, long lda, const uint16_t *b,
                         float *c, long ldc, int load, const float *bias, int relu, int rows, int cols) {
    if (cols > 16) {
        for (int s = 0; s < rows; s += 8)
            avx512Strip(8, 2, blocks, a + s * lda, offsets, lda, b, c + s * ldc, ldc, load, bias, relu);
        return;
    }
    for (int s = 0; s < rows;) {
        if (rows - s > 8) {
            avx512Strip(16, 1, blocks, a + s * lda, offsets, lda, b, c + s * ldc, ldc, load, bias, relu);
            s += 16;
        } else {
            avx512Strip(8, 1, blocks, a + s * lda, offsets, lda, b, c + s * ldc, ldc, load, bias, relu);
            s += 8;
        }
    }
}

// ---- Portable: VDPBF16PS's arithmetic in plain fp32 (a bf16 product is exact in fp32; the odd
// element of a pair is added first, then the even one, each sum rounded; subnormal inputs read as
// zero and subnormal sums are flushed to zero, as the instruction does whatever MXCSR says) ----
static inline float widen(uint16_t h) {
    uint32_t bits = (h & 0x7F80u) == 0 ? (uint32_t)(h & 0x8000u) << 16 : (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline float flush(float x) { return fabsf(x) < FLT_MIN ? copysignf(0.0f, x) : x; }

void pt_bf16_tile_portable(int blocks, const uint16_t *a, const long *offsets, long lda, const uint16_t *b,
                           float *c, long ldc, int load, const float *bias, int relu) {
    for (int r = 0; r < 32; r++) {
        float acc[32];
        for (int n = 0; n < 32; n++) acc[n] = load ? c[r * ldc + n] : 0.0f;
        for (int kb = 0; kb < blocks; kb++) {
            const uint16_t *bk = b + kb * 1024, *ak = a + r * lda + (offsets ? offsets[kb] : kb * 32);
            for (int p = 0; p < 16; p++) {
                float a0 = widen(ak[2 * p]), a1 = widen(ak[2 * p + 1]);
                for (int n = 0; n < 32; n++) {
                    const uint16_t *bp = bk + (n / 16) * 512 + p * 32 + (n % 16) * 2;
                    float s = flush(acc[n] + a1 * widen(bp[1]));
                    acc[n] = flush(s + a0 * widen(bp[0]));
                }
            }
        }
        for (int n = 0; n < 32; n++) {
            float v = acc[n];
            if (bias) v += bias[n];
            if (relu && v < 0.0f) v = 0.0f;
            c[r * ldc + n] = v;
        }
    }
}


// ---- Packing a transposed A: 16 rows x 32 k at a time as a 16 x 16 transpose of bf16 pairs ----
static inline uint16_t roundOne(float f) {
    uint32_t bits;
    memcpy(&bits, &f, 4);
    if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((bits >> 16) | 0x40);
    return (uint16_t)((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}

__attribute__((target("avx512f,avx512bw")))
static inline __m512i round512(__m512 v) {
    __m512i b = _mm512_castps_si512(v);
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(b, _mm512_set1_epi32(0x7FFF)), lsb), 16);
    __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(b, _mm512_set1_epi32(0x7FFFFFFF)), _mm512_set1_epi32(0x7F800000));
    return _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(0x40)));
}

// In place: row r of the 16 x 16 words becomes column r.
__attribute__((target("avx512f,avx512bw")))
static void transpose16(__m512i r[16]) {
    __m512i t[16], u[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        u[4 * i + 0] = _mm512_unpacklo_epi64(t[4 * i + 0], t[4 * i + 2]);
        u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i + 0], t[4 * i + 2]);
        u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
        u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
    }
    // u[4a + b] holds rows 4a..4a+3's words for columns {b, b+4, b+8, b+12}... in 128-bit lanes.
    for (int i = 0; i < 4; i++) {
        __m512i x0 = _mm512_shuffle_i32x4(u[i], u[4 + i], 0x88), x1 = _mm512_shuffle_i32x4(u[i], u[4 + i], 0xDD);
        __m512i y0 = _mm512_shuffle_i32x4(u[8 + i], u[12 + i], 0x88), y1 = _mm512_shuffle_i32x4(u[8 + i], u[12 + i], 0xDD);
        r[i] = _mm512_shuffle_i32x4(x0, y0, 0x88);
        r[i + 8] = _mm512_shuffle_i32x4(x0, y0, 0xDD);
        r[i + 4] = _mm512_shuffle_i32x4(x1, y1, 0x88);
        r[i + 12] = _mm512_shuffle_i32x4(x1, y1, 0xDD);
    }
}

__attribute__((target("avx512f,avx512bw")))
static void packTransposed512(const float *src, long ld, int rows, int k, uint16_t *dst, long lda) {
    int i0 = 0;
    for (; i0 + 16 <= rows; i0 += 16) {
        int p0 = 0;
        for (; p0 + 32 <= k; p0 += 32) {
            __m512i w[16];
            for (int q = 0; q < 16; q++) {
                __m512i lo = round512(_mm512_loadu_ps(src + (long)(p0 + 2 * q) * ld + i0));
                __m512i hi = round512(_mm512_loadu_ps(src + (long)(p0 + 2 * q + 1) * ld + i0));
                w[q] = _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16));  // word i: (k = p0+2q, p0+2q+1) of row i0+i
            }
            transpose16(w);
            for (int i = 0; i < 16; i++) _mm512_storeu_si512(dst + (long)(i0 + i) * lda + p0, w[i]);
        }
        for (int i = i0; i < i0 + 16; i++) {
            for (int p = p0; p < k; p++) dst[(long)i * lda + p] = roundOne(src[(long)p * ld + i]);
        }
    }
    for (int i = i0; i < rows; i++) {
        for (int p = 0; p < k; p++) dst[(long)i * lda + p] = roundOne(src[(long)p * ld + i]);
    }
}

void pt_bf16_pack_transposed(const float *src, long ld, int rows, int k, uint16_t *dst, long lda) {
    if (hasAVX512BW()) {
        packTransposed512(src, ld, rows, k, dst, lda);
    } else {
        for (int i = 0; i < rows; i++) {
            for (int p = 0; p < k; p++) dst[(long)i * lda + p] = roundOne(src[(long)p * ld + i]);
        }
    }
    for (int i = 0; i < rows; i++) memset(dst + (long)i * lda + k, 0, (size_t)(lda - k) * 2);
}


__attribute__((target("avx512f,avx512bw,avx512vl")))
static void packRows512(const float *src, long ld, int rows, int k, uint16_t *dst, long lda) {
    for (int i = 0; i < rows; i++) {
        const float *s = src + (long)i * ld;
        uint16_t *d = dst + (long)i * lda;
        int p = 0;
        for (; p + 16 <= k; p += 16) _mm256_storeu_si256((__m256i *)(d + p), _mm512_cvtepi32_epi16(round512(_mm512_loadu_ps(s + p))));
        if (p < k) {
            __mmask16 m = (__mmask16)((1u << (k - p)) - 1);
            _mm256_mask_storeu_epi16(d + p, m, _mm512_cvtepi32_epi16(round512(_mm512_maskz_loadu_ps(m, s + p))));
        }
    }
}

void pt_bf16_pack_rows(const float *src, long ld, int rows, int k, uint16_t *dst, long lda) {
    if (hasAVX512BW()) {
        packRows512(src, ld, rows, k, dst, lda);
    } else {
        for (int i = 0; i < rows; i++) {
            for (int p = 0; p < k; p++) dst[(long)i * lda + p] = roundOne(src[(long)i * ld + p]);
        }
    }
    for (int i = 0; i < rows; i++) memset(dst + (long)i * lda + k, 0, (size_t)(lda - k) * 2);
}

__attribute__((target("avx512f,avx512bw")))
static void packPairs512(const float *src, long ld, int k, int pairs, uint32_t *words, long qStride) {
    for (int q = 0; q < pairs; q++) {
        int k0 = 2 * q;
        __m512i lo = k0 < k ? round512(_mm512_loadu_ps(src + (long)k0 * ld)) : _mm512_setzero_si512();
        __m512i hi = k0 + 1 < k ? round512(_mm512_loadu_ps(src + (long)(k0 + 1) * ld)) : _mm512_setzero_si512();
        _mm512_storeu_si512(words + (long)q * qStride, _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
    }
}

void pt_bf16_pack_pairs16(const float *src, long ld, int k, int pairs, uint32_t *words, long qStride) {
    if (hasAVX512BW()) { packPairs512(src, ld, k, pairs, words, qStride); return; }
    for (int q = 0; q < pairs; q++) {
        for (int n = 0; n < 16; n++) {
            uint32_t lo = 2 * q < k ? roundOne(src[(long)(2 * q) * ld + n]) : 0;
            uint32_t hi = 2 * q + 1 < k ? roundOne(src[(long)(2 * q + 1) * ld + n]) : 0;
            words[(long)q * qStride + n] = lo | hi << 16;
        }
    }
}

__attribute__((target("avx512f,avx512bw")))
static void packPairsTransposed512(const float *src, long ld, int k, uint32_t *words) {
    __m512i w[16];
    __mmask16 lo = k >= 16 ? 0xFFFF : (__mmask16)((1u << (k > 0 ? k : 0)) - 1);
    __mmask16 hi = k >= 32 ? 0xFFFF : (__mmask16)(k > 16 ? (1u << (k - 16)) - 1 : 0);
    for (int n = 0; n < 16; n++) {
        // Column n's 32 k values as 16 pairs: even k in the low half of each word.
        __m512i a = round512(_mm512_maskz_loadu_ps(lo, src + (long)n * ld));
        __m512i b = round512(_mm512_maskz_loadu_ps(hi, src + (long)n * ld + 16));
        // Gather the even and odd k of column n: words q = a[2q] | a[2q+1] << 16 (q < 8 from a, 8.. from b).
        __m512i even = _mm512_permutex2var_epi32(a, _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0), b);
        __m512i odd = _mm512_permutex2var_epi32(a, _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1), b);
        w[n] = _mm512_or_si512(even, _mm512_slli_epi32(odd, 16));
    }
    transpose16(w);  // row q: the 16 columns' words of pair q
    for (int q = 0; q < 16; q++) _mm512_storeu_si512(words + q * 16, w[q]);
}

void pt_bf16_pack_pairs16_transposed(const float *src, long ld, int k, uint32_t *words) {
    if (hasAVX512BW()) { packPairsTransposed512(src, ld, k, words); return; }
    for (int q = 0; q < 16; q++) {
        for (int n = 0; n < 16; n++) {
            uint32_t lo = 2 * q < k ? roundOne(src[(long)n * ld + 2 * q]) : 0;
            uint32_t hi = 2 * q + 1 < k ? roundOne(src[(long)n * ld + 2 * q + 1]) : 0;
            words[q * 16 + n] = lo | hi << 16;
        }
    }
}

// Whole 16 x 16 blocks of 32-bit words through transpose16; the ragged edges word by word.
__attribute__((target("avx512f,avx512bw")))
static void transpose512(const float *src, long lds, int rows, int cols, float *dst, long ldd) {
    int r0 = 0;
    for (; r0 + 16 <= rows; r0 += 16) {
        int c0 = 0;
        for (; c0 + 16 <= cols; c0 += 16) {
            __m512i w[16];
            for (int r = 0; r < 16; r++) w[r] = _mm512_loadu_si512(src + (long)(r0 + r) * lds + c0);
            transpose16(w);
            for (int c = 0; c < 16; c++) _mm512_storeu_si512(dst + (long)(c0 + c) * ldd + r0, w[c]);
        }
        for (int c = c0; c < cols; c++) {
            for (int r = r0; r < r0 + 16; r++) dst[(long)c * ldd + r] = src[(long)r * lds + c];
        }
    }
    for (int c = 0; c < cols; c++) {
        for (int r = r0; r < rows; r++) dst[(long)c * ldd + r] = src[(long)r * lds + c];
    }
}

void pt_transpose32(const float *src, long lds, int rows, int cols, float *dst, long ldd) {
    if (hasAVX512BW()) { transpose512(src, lds, rows, cols, dst, ldd); return; }
    for (int c = 0; c < cols; c++) {
        for (int r = 0; r < rows; r++) dst[(long)c * ldd + r] = src[(long)r * lds + c];
    }
}
