// C[M, N] = A[M, K] · B[N, K]ᵀ with both operands K-contiguous: a dense layer's input gradient
// dX = dY · Wᵀ with W stored [in, out]. The blocked GEMM would have to transpose-pack W (a
// scalar scatter per element) or scatter a transposed result; here both operands stream
// straight from their rows. Tiles of RA x RB outputs (GemmNTMicroKernel.swift), each summed
// entirely by one kernel call, so any split of N across threads gives the same bits.

/// The fixed lane-summing tree of GemmNT: halves added pairwise down to one lane.
@inline(__always) func ntReduce(_ v: SIMD16<Float>) -> Float { ntReduce(v.lowHalf + v.highHalf) }
@inline(__always) func ntReduce(_ v: SIMD8<Float>) -> Float {
    let q = v.lowHalf + v.highHalf, d = q.lowHalf + q.highHalf
    return d[0] + d[1]
}
/// Adds the k tail [from, to) after the vector part, in k order.
@inline(__always) func ntTail(_ s: Float, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, from: Int, to: Int) -> Float {
    var s = s
    for p in from..<to { s += a[p] * b[p] }
    return s
}

public enum GemmNT {
    /// Output tile: rows of A (M) by rows of B (N).
    public static let ra = gemmNTRA, rb = gemmNTRB

    /// Columns [n0, n1) of C = A·Bᵀ for all M rows; C is row-major with leading dimension ldc.
    /// n0 should be a multiple of `rb` so tiles are the same whatever the split (it does not
    /// change the bits either way: every element is summed the same way by any tile).
    public static func multiply(m: Int, k: Int, a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                                columns: Range<Int>, c: UnsafeMutablePointer<Float>, ldc: Int) {
        withUnsafeTemporaryAllocation(of: Float.self, capacity: ra * rb) { tile in
            let out = tile.baseAddress!
            var j = columns.lowerBound
            while j < columns.upperBound {
                let cols = min(rb, columns.upperBound - j)
                // The B rows stay in L1 while every A tile passes them (A is the small operand).
                var i = 0
                while i < m {
                    let rows = min(ra, m - i)
                    gemmNTKernel(k, a + i * lda, lda, rows, b + j * ldb, ldb, cols, out)
                    for r in 0..<rows {
                        for q in 0..<cols { c[(i + r) * ldc + j + q] = out[r * rb + q] }
                    }
                    i += ra
                }
                j += rb
            }
        }
    }
}
