/* pack.h - repacked weight layouts for the GEMM micro-kernels (internal to
 * src/cpu/; the engine uses them through matmul.h).
 *
 * "x16" layouts, for the 32-element block types Q8_0, Q4_0, Q5_0, IQ4_NL:
 * rows are taken in groups of 16 (the last group padded with zero rows);
 * group g is nb = K/32 packed blocks, each
 *
 *   [16 x fp16 d, row r at 2r]
 *   [quants: for k-step j, 64 bytes: 4 bytes of row r at 4r]
 *   [Q5_0 only: 8 x u64 masks of fifth bits]
 *
 * Q8_0: 8 steps, byte = q + 128 (elements 4j..4j+3).
 * Q4_0, IQ4_NL: 4 steps, byte i of row r = the block's byte 4j+i unchanged:
 *   low nibble = element 4j+i, high nibble = element 16+4j+i.
 * Q5_0: as Q4_0, then for step j the u64 at 288+16j has bit 4r+i = fifth
 *   bit of element 4j+i of row r, the u64 at 288+16j+8 that of 16+4j+i.
 *
 * The unsigned value a kernel multiplies is quant + hr_pack_offset(kind)
 * (IQ4_NL: table value + 128); the offset times the activation block sum is
 * subtracted exactly in integers. Blocks per group have the same size as the
 * original rows (34, 18, 22, 18 bytes per row and block).
 *
 * K-quant layouts, per 256-element super-block and group of 16 rows:
 *
 * Q4_K (2368 bytes, 148 per row: 4 more than the original):
 *   0    16 x fp16 d
 *   32   16 x fp16 dmin
 *   64   8 x 16 u8 scales, sub-block s at 64+16s (row r at +r)
 *   192  4 x 32 u8 min pairs: pair p at 192+32p, row r: mins 2p, 2p+1
 *   320  chunk c (0..3), step j (0..7) at 320+512c+64j: row r's bytes
 *        qs[32c+4j..+3] (low nibbles: elements 64c+4j.., high: 64c+32+4j..)
 *   Activation side (per token and super-block): 4 int32, pair p = int16
 *   sums of the 32-element groups 2p (low half) and 2p+1 (high half).
 *
 * Q6_K (3360 bytes, 210 per row, as the original); q = stored 6-bit value:
 *   0    16 x fp16 d
 *   32   16 x 16 int8 scales, sub-block s at 32+16s
 *   288  step u (0..31) at 288+64u: row r byte i = low nibble of q[4u+i]
 *        | low nibble of q[128+4u+i] << 4
 *   2336 v (0..15) at 2336+64v: row r byte i = bits 4-5 of q[8v+i],
 *        q[128+8v+i], q[8v+4+i], q[128+8v+4+i] at bits 0-1, 2-3, 4-5, 6-7 */
#ifndef HR_CPU_PACK_H
#define HR_CPU_PACK_H

#include <stddef.h>
#include <stdint.h>

enum { HR_PACK_NONE = 0, HR_PACK_Q8_0, HR_PACK_Q4_0, HR_PACK_Q5_0, HR_PACK_IQ4_NL, HR_PACK_Q4_K, HR_PACK_Q6_K };

#define HR_PACK_ROWS 16

static inline size_t hr_pack_block_bytes(int kind)
{
    switch (kind) {
    case HR_PACK_Q8_0: return 32 + 512;
    case HR_PACK_Q5_0: return 32 + 256 + 64;
    case HR_PACK_Q4_K: return 2368;
    case HR_PACK_Q6_K: return 3360;
    default: return 32 + 256;
    }
}

/* Elements per block of the packed type and its activation type. */
static inline int hr_pack_is_k(int kind) { return kind == HR_PACK_Q4_K || kind == HR_PACK_Q6_K; }

static inline int hr_pack_offset(int kind)
{
    return kind == HR_PACK_Q4_0 ? 8 : kind == HR_PACK_Q5_0 ? 16 : 128;
}

/* y[t*y_row + r] for r < n_valid of one group and T tokens: a points at
 * token 0's Q8_0 activation row (a_row bytes apart), da/as at its per-block
 * float scales / int32 quant sums (side_row elements apart). */
typedef void (*hr_gemm_x16_fn)(int64_t nb, const uint8_t *wg, const uint8_t *a, size_t a_row, const float *da,
                               const int32_t *as, size_t side_row, int T, float *y, size_t y_row, int n_valid);

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
hr_gemm_x16_fn hr_avx512_gemm_x16(int kind);
#endif

#endif
