// Adam with bias correction, written as PyTorch does:
//   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   w -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// with weight decay as torch.optim.Adam adds it (g += wd w first) or as AdamW applies it
// (w *= 1 - lr wd first, `decoupled`). Elementwise, so any split of the parameters across
// threads gives the same bits.
import Foundation

public struct AdamStep: Sendable {
    public var stepSize: Float       // lr / (1 - b1^t)
    public var invSqrtCorrection2: Float  // 1 / sqrt(1 - b2^t)
    public var beta1, beta2, epsilon: Float
    public var oneMinusBeta1, oneMinusBeta2: Float  // from Double: Float(1) - Float(0.999) is off by 5e-5
    /// Adam's L2 weight decay (added to the gradient), or with `decoupled` AdamW's: then `keep`
    /// = 1 - lr wd multiplies the weights before the update.
    public var weightDecay: Float = 0, keep: Float = 1
    public var decoupled = false

    /// `lr`: this step's rate (after any schedule); `t`: the step, from 1.
    public init(lr: Double, beta1: Double, beta2: Double, epsilon: Double, t: Int, weightDecay: Double = 0, decoupled: Bool = false) {
        stepSize = Float(lr / (1 - pow(beta1, Double(t))))
        invSqrtCorrection2 = Float(1 / (1 - pow(beta2, Double(t))).squareRoot())
        self.beta1 = Float(beta1); self.beta2 = Float(beta2); self.epsilon = Float(epsilon)
        oneMinusBeta1 = Float(1 - beta1); oneMinusBeta2 = Float(1 - beta2)
        self.decoupled = decoupled
        if decoupled { keep = Float(1 - lr * weightDecay) } else { self.weightDecay = Float(weightDecay) }
    }
}

public enum AdamUpdate {
    /// Returns false when a gradient was NaN or infinite (the check rides along the same pass).
    /// SIMD16 lanes run the same IEEE operations in the same order as the scalar tail, so an
    /// element's bits do not depend on whether it fell in a vector or in the tail.
    @discardableResult
    public static func apply(_ s: AdamStep, w: UnsafeMutablePointer<Float>, g: UnsafePointer<Float>,
                             m: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>, count: Int) -> Bool {
        if s.decoupled { return run(s, w, g, m, v, count, l2: false, decoupled: true) }
        if s.weightDecay != 0 { return run(s, w, g, m, v, count, l2: true, decoupled: false) }
        return run(s, w, g, m, v, count, l2: false, decoupled: false)
    }

    /// `l2` and `decoupled` are constants at each call site, so each variant is its own loop (the
    /// plain one is the loop Adam always had).
    @inline(__always)
    static func run(_ s: AdamStep, _ w: UnsafeMutablePointer<Float>, _ g: UnsafePointer<Float>, _ m: UnsafeMutablePointer<Float>,
                    _ v: UnsafeMutablePointer<Float>, _ count: Int, l2: Bool, decoupled: Bool) -> Bool {
        typealias V = Lanes.V
        let wd = V(repeating: s.weightDecay), keep = V(repeating: s.keep)
        let b1 = V(repeating: s.beta1), b2 = V(repeating: s.beta2)
        let c1 = V(repeating: s.oneMinusBeta1), c2 = V(repeating: s.oneMinusBeta2)
        let step = V(repeating: s.stepSize), inv = V(repeating: s.invSqrtCorrection2), eps = V(repeating: s.epsilon)
        return Lanes.update(g, count: count, vector: { i, g in
            var gi = g, wi = Lanes.load(w + i)
            if l2 { gi = gi + wd * wi }
            if decoupled { wi = wi * keep }
            let mi = b1 * Lanes.load(m + i) + c1 * gi
            let vi = b2 * Lanes.load(v + i) + c2 * (gi * gi)
            Lanes.store(mi, m + i); Lanes.store(vi, v + i)
            Lanes.store(wi - step * mi / (vi.squareRoot() * inv + eps), w + i)
        }, scalar: { i, g in
            var gi = g, wi = w[i]
            if l2 { gi = gi + s.weightDecay * wi }
            if decoupled { wi = wi * s.keep }
            let mi = s.beta1 * m[i] + s.oneMinusBeta1 * gi
            let vi = s.beta2 * v[i] + s.oneMinusBeta2 * (gi * gi)
            m[i] = mi; v[i] = vi
            w[i] = wi - s.stepSize * mi / (vi.squareRoot() * s.invSqrtCorrection2 + s.epsilon)
        })
    }
}
