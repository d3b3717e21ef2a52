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
    @discardableResult
    public static func apply(_ s: AdamStep, w: UnsafeMutablePointer<Float>, g: UnsafePointer<Float>,
                             m: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>, count: Int) -> Bool {
        let b1 = s.beta1, b2 = s.beta2, c1 = s.oneMinusBeta1, c2 = s.oneMinusBeta2
        var nonFinite: UInt32 = 0  // an all-ones exponent marks NaN or infinity; integer OR vectorises
        for i in 0..<count {
            let gi = g[i]
            nonFinite |= ~gi.bitPattern & 0x7F80_0000 == 0 ? 1 : 0
            let mi = b1 * m[i] + c1 * gi
            let vi = b2 * v[i] + c2 * (gi * gi)
            m[i] = mi; v[i] = vi
            w[i] -= s.stepSize * mi / (vi.squareRoot() * s.invSqrtCorrection2 + s.epsilon)
        }
        return nonFinite == 0
    }
}
