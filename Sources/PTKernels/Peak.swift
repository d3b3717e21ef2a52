import CBF16
import Dispatch

// The FMA peak of one core: 12 independent FMA chains of the build's vector width (SIMD16 on
// AVX-512, SIMD8 on AVX2; enough to cover the FMA latency on two ports), no memory traffic. Used to express measured GFLOP/s as a % of the machine.

public enum FMAPeak {
    /// Runs `iterations` rounds of 12 vector FMAs; returns a value so the work is not elided.
    @inline(never)
    public static func spin(iterations: Int, seed: Float) -> Float {
        typealias V = GemmVector
        let m = V(repeating: 0.999_999), a = V(repeating: 1e-7)
        var c0 = V(repeating: seed), c1 = c0 + 1, c2 = c0 + 2, c3 = c0 + 3, c4 = c0 + 4, c5 = c0 + 5
        var c6 = c0 + 6, c7 = c0 + 7, c8 = c0 + 8, c9 = c0 + 9, c10 = c0 + 10, c11 = c0 + 11
        for _ in 0..<iterations {
            c0 = a.addingProduct(c0, m); c1 = a.addingProduct(c1, m); c2 = a.addingProduct(c2, m)
            c3 = a.addingProduct(c3, m); c4 = a.addingProduct(c4, m); c5 = a.addingProduct(c5, m)
            c6 = a.addingProduct(c6, m); c7 = a.addingProduct(c7, m); c8 = a.addingProduct(c8, m)
            c9 = a.addingProduct(c9, m); c10 = a.addingProduct(c10, m); c11 = a.addingProduct(c11, m)
        }
        let s = c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7 + c8 + c9 + c10 + c11
        return s.sum()
    }
    /// FLOPs done by `spin` (an FMA counts 2 per lane).
    public static func flops(iterations: Int) -> Double { Double(iterations) * 12 * Double(GemmVector.scalarCount) * 2 }
}

/// The bf16 tile kernel's peak on one core: one 32x32 tile of C over 18 blocks of 32 k (the A and
/// B panels, 72 KB, stay in L1 and L2), again and again. What a bf16 GEMM could reach if its
/// operands were always at hand.
public enum BF16Peak {
    public static func gflops(path: BF16Path, tiles: Int) -> Double {
        let blocks = 18, lda = 32 * blocks
        // Tile rows are 64 bytes: aligned to 64, each is one cache line (unaligned, two: half the speed).
        func aligned<T>(_ count: Int, _: T.Type) -> UnsafeMutablePointer<T> {
            UnsafeMutableRawPointer.allocate(byteCount: count * MemoryLayout<T>.stride, alignment: 64).bindMemory(to: T.self, capacity: count)
        }
        let a = aligned(32 * lda, UInt16.self), b = aligned(1024 * blocks, UInt16.self), c = aligned(32 * 32, Float.self)
        defer { a.deallocate(); b.deallocate(); c.deallocate() }
        a.initialize(repeating: BF16.round(Float(1e-3)), count: 32 * lda)
        b.initialize(repeating: BF16.round(Float(1e-3)), count: 1024 * blocks)
        c.initialize(repeating: 0, count: 32 * 32)
        let bw = UnsafeRawPointer(b).assumingMemoryBound(to: UInt32.self)
        if path == .amx { pt_bf16_amx_configure() }  // (GemmBF16.multiply does this for each GEMM)
        let start = DispatchTime.now().uptimeNanoseconds
        for _ in 0..<tiles { GemmBF16.tile(path, blocks, a, lda, bw, c, 32, load: true, bias: nil, relu: false) }
        let sec = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        return Double(tiles) * 2 * 32 * 32 * Double(lda) / sec / 1e9
    }
}
