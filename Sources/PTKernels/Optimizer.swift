// The optimizers' elementwise updates beside Adam (Adam.swift): SGD with momentum, and the
// weight decay of both, written as PyTorch's torch.optim writes them. One value, `OptimizerStep`,
// carries a step's settings to the jobs that apply it.

/// SGD as torch.optim.SGD (dampening 0, not Nesterov):
///   g += weightDecay w;  b = momentum b + g;  w -= lr b      (without momentum: w -= lr g)
/// The buffer b starts at zero, so the first step's b is g, as PyTorch's first step copies it.
public struct SGDStep: Sendable {
    public var lr, momentum, weightDecay: Float
    public init(lr: Double, momentum: Double, weightDecay: Double) {
        self.lr = Float(lr); self.momentum = Float(momentum); self.weightDecay = Float(weightDecay)
    }
}

/// One optimizer step's settings, the learning rate already scheduled.
public enum OptimizerStep: Sendable {
    /// Adam or AdamW (`AdamStep.decay`).
    case adam(AdamStep)
    /// SGD; its momentum buffer is the first moment buffer (the second is unused).
    case sgd(SGDStep)
}

public enum OptimizerUpdate {
    /// Updates `count` parameters from their gradients; false when a gradient was NaN or
    /// infinite (checked on the gradient as given, before weight decay). `m` is Adam's first
    /// moment or SGD's momentum; `v` Adam's second moment (nil for SGD, which has none).
    @discardableResult
    public static func apply(_ step: OptimizerStep, w: UnsafeMutablePointer<Float>, g: UnsafePointer<Float>,
                             m: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>?, count: Int) -> Bool {
        switch step {
        case let .adam(s): return AdamUpdate.apply(s, w: w, g: g, m: m, v: v!, count: count)
        case let .sgd(s): return SGDUpdate.apply(s, w: w, g: g, buffer: m, count: count)
        }
    }
}

/// What the optimizers' loops share: the walk over `count` parameters (16 lanes at a time, then a
/// scalar tail), 16-wide unaligned loads and stores, and the test for a NaN or infinite gradient
/// (an all-ones exponent), the same in a vector lane and in the scalar tail.
enum Lanes {
    typealias V = SIMD16<Float>
    @inline(__always) static func load(_ p: UnsafePointer<Float>) -> V { UnsafeRawPointer(p).loadUnaligned(as: V.self) }
    @inline(__always) static func load(_ p: UnsafeMutablePointer<Float>) -> V { UnsafeRawPointer(p).loadUnaligned(as: V.self) }
    @inline(__always) static func store(_ x: V, _ p: UnsafeMutablePointer<Float>) { UnsafeMutableRawPointer(p).storeBytes(of: x, as: V.self) }
    /// 1 in each lane of `g` that is NaN or infinite.
    @inline(__always) static func nonFinite(_ g: V) -> SIMD16<UInt32> {
        let exponent = SIMD16<UInt32>(repeating: 0x7F80_0000)
        return SIMD16<UInt32>().replacing(with: 1, where: unsafeBitCast(g, to: SIMD16<UInt32>.self) & exponent .== exponent)
    }
    @inline(__always) static func nonFinite(_ g: Float) -> UInt32 { ~g.bitPattern & 0x7F80_0000 == 0 ? 1 : 0 }

    /// Calls `vector(i, g[i..<i+16])` for each whole group of 16 gradients, then `scalar(i, g[i])`
    /// for the rest; false when a gradient was NaN or infinite. The two bodies must run the same
    /// IEEE operations in the same order, so that an element's bits do not depend on where it fell.
    @inline(__always)
    static func update(_ g: UnsafePointer<Float>, count: Int, vector: (Int, V) -> Void, scalar: (Int, Float) -> Void) -> Bool {
        var nonFinite = SIMD16<UInt32>()
        var i = 0
        while i + 16 <= count {
            let gi = load(g + i)
            nonFinite |= Self.nonFinite(gi)
            vector(i, gi)
            i += 16
        }
        var tail: UInt32 = nonFinite.wrappedSum()
        while i < count {
            tail |= Self.nonFinite(g[i])
            scalar(i, g[i])
            i += 1
        }
        return tail == 0
    }
}

public enum SGDUpdate {
    @discardableResult
    public static func apply(_ s: SGDStep, w: UnsafeMutablePointer<Float>, g: UnsafePointer<Float>,
                             buffer b: UnsafeMutablePointer<Float>, count: Int) -> Bool {
        switch (s.weightDecay != 0, s.momentum != 0) {
        case (false, false): return run(s, w, g, b, count, decay: false, momentum: false)
        case (false, true): return run(s, w, g, b, count, decay: false, momentum: true)
        case (true, false): return run(s, w, g, b, count, decay: true, momentum: false)
        case (true, true): return run(s, w, g, b, count, decay: true, momentum: true)
        }
    }

    /// `decay` and `momentum` are constants at each call site, so each variant is its own loop.
    @inline(__always)
    static func run(_ s: SGDStep, _ w: UnsafeMutablePointer<Float>, _ g: UnsafePointer<Float>, _ b: UnsafeMutablePointer<Float>,
                    _ count: Int, decay: Bool, momentum: Bool) -> Bool {
        typealias V = Lanes.V
        let lr = V(repeating: s.lr), mu = V(repeating: s.momentum), wd = V(repeating: s.weightDecay)
        return Lanes.update(g, count: count, vector: { i, g in
            var gi = g
            let wi = Lanes.load(w + i)
            if decay { gi = gi + wd * wi }
            if momentum {
                gi = mu * Lanes.load(b + i) + gi
                Lanes.store(gi, b + i)
            }
            Lanes.store(wi - lr * gi, w + i)
        }, scalar: { i, g in
            var gi = g
            if decay { gi = gi + s.weightDecay * w[i] }
            if momentum {
                gi = s.momentum * b[i] + gi
                b[i] = gi
            }
            w[i] = w[i] - s.lr * gi
        })
    }
}
