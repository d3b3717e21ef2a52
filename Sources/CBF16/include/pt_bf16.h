// bf16 matrix tiles with fp32 accumulation: AMX, AVX512-BF16 and a portable path, picked at run
// time (pt_bf16_paths). Every kernel computes one 32x32 fp32 tile of C, or the part of it its
// `rows` and `cols` ask for (AMX and AVX512-BF16), from packed bf16 operands:
//   A: 32 rows, row r's k = 0, 1, 2, ... at a + r * lda (lda a multiple of 32, zero-padded); or,
//      with `offsets`, block kb's 32 k of row r at a + r * lda + offsets[kb] (any lda: rows may
//      overlap, as an input image's pixels do when the GEMM reads its patches in place);
//   B: per block of 32 k, two 16-column halves, each 16 k-pairs x 16 columns x 2 bf16 (the VNNI
//      layout AMX and VDPBF16PS read): value (k, n) of block kb at
//      b + kb * 1024 + (n / 16) * 512 + (k % 32 / 2) * 32 + (n % 16) * 2 + k % 2.
// C (=|+=) A · B over `blocks` blocks of 32 k, then + bias[n] and ReLU when asked. Each element
// is summed in the same order in every tile (k blocks in order, the instruction's own order
// inside one), so its bits depend on K and the path, never on where the tile sits.
#ifndef PT_BF16_H
#define PT_BF16_H
#include <stdint.h>

enum { PT_BF16_AMX = 1, PT_BF16_AVX512 = 2 };

/// The paths this CPU and OS offer (PT_BF16_* bits). Asks Linux for the AMX tile state once.
int pt_bf16_paths(void);

/// AMX computes only C's first `rows` (16 or fewer: half the tiles) and `cols` (16 or fewer: half
/// again); the rest of the 32 x 32 is left as it was. Each element's bits are the full tile's.
void pt_bf16_tile_amx(int blocks, const uint16_t *a, const long *offsets, long lda, const uint16_t *b,
                      float *c, long ldc, int load, const float *bias, int relu, int rows, int cols);
/// AVX512-BF16 computes C's first `rows` rows, by strips of 8 rows (or, where `cols` <= 16, of 16
/// rows where more than 8 remain), and where `cols` <= 16 only its first 16 columns: it reads A and
/// reads and writes C in those strips and columns alone. Each element's bits are the full tile's.
void pt_bf16_tile_avx512(int blocks, const uint16_t *a, const long *offsets, long lda, const uint16_t *b,
                         float *c, long ldc, int load, const float *bias, int relu, int rows, int cols);
void pt_bf16_tile_portable(int blocks, const uint16_t *a, const long *offsets, long lda, const uint16_t *b,
                           float *c, long ldc, int load, const float *bias, int relu);
/// Loads this thread's AMX tile configuration (8 tiles of 16 rows x 64 bytes); before AMX tiles.
void pt_bf16_amx_configure(void);

/// dst[i * lda + p] = bf16(src[p * ld + i]) (round to nearest even) for i < rows, p < k, and zeros
/// for p in [k, lda): a GEMM's A stored transposed (its rows along memory), packed as rows.
void pt_bf16_pack_transposed(const float *src, long ld, int rows, int k, uint16_t *dst, long lda);
/// dst[i * lda + p] = bf16(src[i * ld + p]) for i < rows, p < k, zeros for p in [k, lda): a
/// row-major A packed as rows.
void pt_bf16_pack_rows(const float *src, long ld, int rows, int k, uint16_t *dst, long lda);
/// A row-major B's 16 columns as k-pair words: words[q * 16 + n] = bf16(src[2q][n]) |
/// bf16(src[2q + 1][n]) << 16 for q < pairs, with rows from k on read as zeros.
void pt_bf16_pack_pairs16(const float *src, long ld, int k, int pairs, uint32_t *words, long qStride);
/// The same from a B stored transposed (column n's k = 0, 1, ... at src + n * ld): 16 columns, 16
/// k-pairs from k0, words[q * 16 + n] as above, rows from k on read as zeros.
void pt_bf16_pack_pairs16_transposed(const float *src, long ld, int k, uint32_t *words);
/// dst[c * ldd + r] = src[r * lds + c] for r < rows, c < cols: a plain 32-bit transpose (the
/// 16 x 16 word shuffle the packing uses, on any fp32 matrix), exact.
void pt_transpose32(const float *src, long lds, int rows, int cols, float *dst, long ldd);
#endif
