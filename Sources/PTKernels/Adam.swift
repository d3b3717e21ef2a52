// Adam with bias correction, written as PyTorch does:
//   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   w -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// Elementwise, so any split of the parameters across threads gives the same bits.
import Foundation

public struct AdamStep: Sendable {
    public var stepSize: Float       // lr / (1 - b1^t)
    public var invSqrtCorrection2: Float  // 1 / sqrt(1 - b2^t)
    public var beta1, beta2, epsilon: Float
    public var oneMinusBeta1, oneMinusBeta2: Float  // from Double: Float(1) - Float(0.999) is off by 5e-5

    public init(lr: Double, beta1: Double, beta2: Double, epsilon: Double, t: Int) {
        stepSize = Float(lr / (1 - pow(beta1, Double(t))))
        invSqrtCorrection2 = Float(1 / (1 - pow(beta2, Double(t))).squareRoot())
        self.beta1 = Float(beta1); self.beta2 = Float(beta2); self.epsilon = Float(epsilon)
        oneMinusBeta1 = Float(1 - beta1); oneMinusBeta2 = Float(1 - beta2)
    }
}

public enum AdamUpdate {
    /// Returns false when a gradient was NaN or infinite (the check rides along the same pass).
    /// SIMD16 lanes run the same IEEE operations in the same order as the scalar tail, so an
    /// element's bits do not depend on whether it fell in a vector or in the tail.
    @discardableResult
    public static func apply(_ s: AdamStep, w: UnsafeMutablePointer<Float>, g: UnsafePointer<Float>,
                             m: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>, count: Int) -> Bool {
        typealias V = SIMD16<Float>
        let b1 = V(repeating: s.beta1), b2 = V(repeating: s.beta2)
        let c1 = V(repeating: s.oneMinusBeta1), c2 = V(repeating: s.oneMinusBeta2)
        let step = V(repeating: s.stepSize), inv = V(repeating: s.invSqrtCorrection2), eps = V(repeating: s.epsilon)
        let exponent = SIMD16<UInt32>(repeating: 0x7F80_0000)
        var nonFinite = SIMD16<UInt32>()  // an all-ones exponent marks NaN or infinity
        @inline(__always) func load(_ p: UnsafePointer<Float>) -> V { UnsafeRawPointer(p).loadUnaligned(as: V.self) }
        @inline(__always) func store(_ x: V, _ p: UnsafeMutablePointer<Float>) { UnsafeMutableRawPointer(p).storeBytes(of: x, as: V.self) }
        var i = 0
        while i + 16 <= count {
            let gi = load(g + i)
            let bits = unsafeBitCast(gi, to: SIMD16<UInt32>.self) & exponent
            nonFinite |= SIMD16<UInt32>().replacing(with: 1, where: bits .== exponent)
            let mi = b1 * load(m + i) + c1 * gi
            let vi = b2 * load(v + i) + c2 * (gi * gi)
            store(mi, m + i); store(vi, v + i)
            store(load(w + i) - step * mi / (vi.squareRoot() * inv + eps), w + i)
            i += 16
        }
        var tail: UInt32 = nonFinite.wrappedSum()
        while i < count {
            let gi = g[i]
            tail |= ~gi.bitPattern & 0x7F80_0000 == 0 ? 1 : 0
            let mi = s.beta1 * m[i] + s.oneMinusBeta1 * gi
            let vi = s.beta2 * v[i] + s.oneMinusBeta2 * (gi * gi)
            m[i] = mi; v[i] = vi
            w[i] -= s.stepSize * mi / (vi.squareRoot() * s.invSqrtCorrection2 + s.epsilon)
            i += 1
        }
        return tail == 0
    }
}
