// The GEMM micro-kernel: an MR x NR tile of C in 2*MR vector accumulators that stay in
// registers. AVX-512 builds: 8 x 32 with SIMD16 (16 zmm accumulators); AVX2 builds
// (PTRAIN_SIMD8, set by Package.swift): 6 x 16 with SIMD8 (12 of the 16 ymm registers).
// Checked with objdump: vfmadd231ps on zmm (ymm), no spills in the loop.
// A(r, k) is a[r * aRow + k * aK]; B's NR values for k start at b + k * bK. Packed operands pass
// constant strides so the inlined loop uses immediate offsets; row-major operands are read in
// place with their leading dimension. Each C element accumulates k = 0, 1, 2, ... with one FMA
// per step, so its bits never depend on which tile or thread computed it.

#if PTRAIN_SIMD8
typealias GemmVector = SIMD8<Float>
let gemmMR = 6, gemmNR = 16
#else
typealias GemmVector = SIMD16<Float>
let gemmMR = 8, gemmNR = 32
#endif

@inline(__always) func loadG(_ p: UnsafePointer<Float>) -> GemmVector {
    UnsafeRawPointer(p).loadUnaligned(as: GemmVector.self)
}
@inline(__always) func loadG(_ p: UnsafeMutablePointer<Float>) -> GemmVector {
    UnsafeRawPointer(p).loadUnaligned(as: GemmVector.self)
}
@inline(__always) func storeG(_ v: GemmVector, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: GemmVector.self)
}

#if PTRAIN_SIMD8
@inline(__always)
func gemmKernel(_ kc: Int, _ a: UnsafePointer<Float>, aRow: Int, aK: Int, _ b: UnsafePointer<Float>, bK: Int,
                _ c: UnsafeMutablePointer<Float>, _ ldc: Int, load: Bool,
                bias: UnsafePointer<Float>?, relu: Bool) {
    typealias V = GemmVector
    var c00 = V(), c01 = V(), c10 = V(), c11 = V(), c20 = V(), c21 = V(), c30 = V(), c31 = V(), c40 = V(), c41 = V(), c50 = V(), c51 = V()
    if load {
        c00 = loadG(c + 0 * ldc); c01 = loadG(c + 0 * ldc + 8)
        c10 = loadG(c + 1 * ldc); c11 = loadG(c + 1 * ldc + 8)
        c20 = loadG(c + 2 * ldc); c21 = loadG(c + 2 * ldc + 8)
        c30 = loadG(c + 3 * ldc); c31 = loadG(c + 3 * ldc + 8)
        c40 = loadG(c + 4 * ldc); c41 = loadG(c + 4 * ldc + 8)
        c50 = loadG(c + 5 * ldc); c51 = loadG(c + 5 * ldc + 8)
    }
    var pa = a, pb = b
    for _ in 0..<kc {
        let b0 = loadG(pb), b1 = loadG(pb + 8)
        let a0 = pa[0 * aRow]; c00 = c00.addingProduct(a0, b0); c01 = c01.addingProduct(a0, b1)
        let a1 = pa[1 * aRow]; c10 = c10.addingProduct(a1, b0); c11 = c11.addingProduct(a1, b1)
        let a2 = pa[2 * aRow]; c20 = c20.addingProduct(a2, b0); c21 = c21.addingProduct(a2, b1)
        let a3 = pa[3 * aRow]; c30 = c30.addingProduct(a3, b0); c31 = c31.addingProduct(a3, b1)
        let a4 = pa[4 * aRow]; c40 = c40.addingProduct(a4, b0); c41 = c41.addingProduct(a4, b1)
        let a5 = pa[5 * aRow]; c50 = c50.addingProduct(a5, b0); c51 = c51.addingProduct(a5, b1)
        pa += aK; pb += bK
    }
    if let bias {
        let d0 = loadG(bias), d1 = loadG(bias + 8)
        c00 += d0; c01 += d1
        c10 += d0; c11 += d1
        c20 += d0; c21 += d1
        c30 += d0; c31 += d1
        c40 += d0; c41 += d1
        c50 += d0; c51 += d1
    }
    if relu {
        let z = V()
        c00.replace(with: z, where: c00 .< z); c01.replace(with: z, where: c01 .< z)
        c10.replace(with: z, where: c10 .< z); c11.replace(with: z, where: c11 .< z)
        c20.replace(with: z, where: c20 .< z); c21.replace(with: z, where: c21 .< z)
        c30.replace(with: z, where: c30 .< z); c31.replace(with: z, where: c31 .< z)
        c40.replace(with: z, where: c40 .< z); c41.replace(with: z, where: c41 .< z)
        c50.replace(with: z, where: c50 .< z); c51.replace(with: z, where: c51 .< z)
    }
    storeG(c00, c + 0 * ldc); storeG(c01, c + 0 * ldc + 8)
    storeG(c10, c + 1 * ldc); storeG(c11, c + 1 * ldc + 8)
    storeG(c20, c + 2 * ldc); storeG(c21, c + 2 * ldc + 8)
    storeG(c30, c + 3 * ldc); storeG(c31, c + 3 * ldc + 8)
    storeG(c40, c + 4 * ldc); storeG(c41, c + 4 * ldc + 8)
    storeG(c50, c + 5 * ldc); storeG(c51, c + 5 * ldc + 8)
}
#else
@inline(__always)
func gemmKernel(_ kc: Int, _ a: UnsafePointer<Float>, aRow: Int, aK: Int, _ b: UnsafePointer<Float>, bK: Int,
                _ c: UnsafeMutablePointer<Float>, _ ldc: Int, load: Bool,
                bias: UnsafePointer<Float>?, relu: Bool) {
    typealias V = GemmVector
    var c00 = V(), c01 = V(), c10 = V(), c11 = V(), c20 = V(), c21 = V(), c30 = V(), c31 = V(), c40 = V(), c41 = V(), c50 = V(), c51 = V(), c60 = V(), c61 = V(), c70 = V(), c71 = V()
    if load {
        c00 = loadG(c + 0 * ldc); c01 = loadG(c + 0 * ldc + 16)
        c10 = loadG(c + 1 * ldc); c11 = loadG(c + 1 * ldc + 16)
        c20 = loadG(c + 2 * ldc); c21 = loadG(c + 2 * ldc + 16)
        c30 = loadG(c + 3 * ldc); c31 = loadG(c + 3 * ldc + 16)
        c40 = loadG(c + 4 * ldc); c41 = loadG(c + 4 * ldc + 16)
        c50 = loadG(c + 5 * ldc); c51 = loadG(c + 5 * ldc + 16)
        c60 = loadG(c + 6 * ldc); c61 = loadG(c + 6 * ldc + 16)
        c70 = loadG(c + 7 * ldc); c71 = loadG(c + 7 * ldc + 16)
    }
    var pa = a, pb = b
    for _ in 0..<kc {
        let b0 = loadG(pb), b1 = loadG(pb + 16)
        let a0 = pa[0 * aRow]; c00 = c00.addingProduct(a0, b0); c01 = c01.addingProduct(a0, b1)
        let a1 = pa[1 * aRow]; c10 = c10.addingProduct(a1, b0); c11 = c11.addingProduct(a1, b1)
        let a2 = pa[2 * aRow]; c20 = c20.addingProduct(a2, b0); c21 = c21.addingProduct(a2, b1)
        let a3 = pa[3 * aRow]; c30 = c30.addingProduct(a3, b0); c31 = c31.addingProduct(a3, b1)
        let a4 = pa[4 * aRow]; c40 = c40.addingProduct(a4, b0); c41 = c41.addingProduct(a4, b1)
        let a5 = pa[5 * aRow]; c50 = c50.addingProduct(a5, b0); c51 = c51.addingProduct(a5, b1)
        let a6 = pa[6 * aRow]; c60 = c60.addingProduct(a6, b0); c61 = c61.addingProduct(a6, b1)
        let a7 = pa[7 * aRow]; c70 = c70.addingProduct(a7, b0); c71 = c71.addingProduct(a7, b1)
        pa += aK; pb += bK
    }
    if let bias {
        let d0 = loadG(bias), d1 = loadG(bias + 16)
        c00 += d0; c01 += d1
        c10 += d0; c11 += d1
        c20 += d0; c21 += d1
        c30 += d0; c31 += d1
        c40 += d0; c41 += d1
        c50 += d0; c51 += d1
        c60 += d0; c61 += d1
        c70 += d0; c71 += d1
    }
    if relu {
        let z = V()
        c00.replace(with: z, where: c00 .< z); c01.replace(with: z, where: c01 .< z)
        c10.replace(with: z, where: c10 .< z); c11.replace(with: z, where: c11 .< z)
        c20.replace(with: z, where: c20 .< z); c21.replace(with: z, where: c21 .< z)
        c30.replace(with: z, where: c30 .< z); c31.replace(with: z, where: c31 .< z)
        c40.replace(with: z, where: c40 .< z); c41.replace(with: z, where: c41 .< z)
        c50.replace(with: z, where: c50 .< z); c51.replace(with: z, where: c51 .< z)
        c60.replace(with: z, where: c60 .< z); c61.replace(with: z, where: c61 .< z)
        c70.replace(with: z, where: c70 .< z); c71.replace(with: z, where: c71 .< z)
    }
    storeG(c00, c + 0 * ldc); storeG(c01, c + 0 * ldc + 16)
    storeG(c10, c + 1 * ldc); storeG(c11, c + 1 * ldc + 16)
    storeG(c20, c + 2 * ldc); storeG(c21, c + 2 * ldc + 16)
    storeG(c30, c + 3 * ldc); storeG(c31, c + 3 * ldc + 16)
    storeG(c40, c + 4 * ldc); storeG(c41, c + 4 * ldc + 16)
    storeG(c50, c + 5 * ldc); storeG(c51, c + 5 * ldc + 16)
    storeG(c60, c + 6 * ldc); storeG(c61, c + 6 * ldc + 16)
    storeG(c70, c + 7 * ldc); storeG(c71, c + 7 * ldc + 16)
}
#endif

/// Both operands packed.
@inline(never)
func gemmKernelPacked(_ kc: Int, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ c: UnsafeMutablePointer<Float>,
                      _ ldc: Int, load: Bool, bias: UnsafePointer<Float>?, relu: Bool) {
    gemmKernel(kc, a, aRow: 1, aK: gemmMR, b, bK: gemmNR, c, ldc, load: load, bias: bias, relu: relu)
}

/// A read in place (row-major, leading dimension lda), B packed.
@inline(never)
func gemmKernelDirectA(_ kc: Int, _ a: UnsafePointer<Float>, _ lda: Int, _ b: UnsafePointer<Float>, _ c: UnsafeMutablePointer<Float>,
                       _ ldc: Int, load: Bool, bias: UnsafePointer<Float>?, relu: Bool) {
    gemmKernel(kc, a, aRow: lda, aK: 1, b, bK: gemmNR, c, ldc, load: load, bias: bias, relu: relu)
}

/// A and B both read in place (row-major, leading dimensions lda and ldb).
@inline(never)
func gemmKernelDirectAB(_ kc: Int, _ a: UnsafePointer<Float>, _ lda: Int, _ b: UnsafePointer<Float>, _ ldb: Int,
                        _ c: UnsafeMutablePointer<Float>, _ ldc: Int, load: Bool, bias: UnsafePointer<Float>?, relu: Bool) {
    gemmKernel(kc, a, aRow: lda, aK: 1, b, bK: ldb, c, ldc, load: load, bias: bias, relu: relu)
}

/// A packed, B read in place (row-major, leading dimension ldb).
@inline(never)
func gemmKernelDirectB(_ kc: Int, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ ldb: Int,
                       _ c: UnsafeMutablePointer<Float>, _ ldc: Int, load: Bool, bias: UnsafePointer<Float>?, relu: Bool) {
    gemmKernel(kc, a, aRow: 1, aK: gemmMR, b, bK: ldb, c, ldc, load: load, bias: bias, relu: relu)
}
