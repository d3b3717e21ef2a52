// The optimizers' updates against the formulas torch.optim writes, in Float64, over lengths that
// take the vector loop and its tail; and each variant of a step gives one element the same bits
// in a vector or in the tail.
import Foundation
import Testing
import PTKernels

/// Three steps of each optimizer on 37 parameters (two 16-wide vectors and a tail of 5). Decay
/// rates are chosen so that no decayed gradient cancels to near zero, where Adam's m / sqrt(v)
/// would turn Float's last bit into a full step.
private struct Case: Sendable, CustomTestStringConvertible {
    var name: String
    var step: @Sendable (Int) -> OptimizerStep
    /// The same three steps in Float64: (w, m, v, g, t) -> (w, m, v).
    var reference: @Sendable (Double, Double, Double, Double, Int) -> (Double, Double, Double)
    var testDescription: String { name }
}

private func adam(_ w: Double, _ m: Double, _ v: Double, _ g: Double, _ t: Int, lr: Double, l2: Double, decoupled: Double)
    -> (Double, Double, Double) {
    let (b1, b2, eps) = (0.9, 0.999, 1e-8)
    let w0 = w * (1 - lr * decoupled), g1 = g + l2 * w
    let m1 = b1 * m + (1 - b1) * g1, v1 = b2 * v + (1 - b2) * g1 * g1
    let step = lr / (1 - pow(b1, Double(t)))
    return (w0 - step * m1 / (v1.squareRoot() / (1 - pow(b2, Double(t))).squareRoot() + eps), m1, v1)
}

private let cases: [Case] = [
    Case(name: "adam", step: { .adam(AdamStep(lr: 0.01, beta1: 0.9, beta2: 0.999, epsilon: 1e-8, t: $0)) },
         reference: { adam($0, $1, $2, $3, $4, lr: 0.01, l2: 0, decoupled: 0) }),
    Case(name: "adam with L2 decay", step: { .adam(AdamStep(lr: 0.01, beta1: 0.9, beta2: 0.999, epsilon: 1e-8, t: $0, weightDecay: 0.07)) },
         reference: { adam($0, $1, $2, $3, $4, lr: 0.01, l2: 0.07, decoupled: 0) }),
    Case(name: "adamw", step: { .adam(AdamStep(lr: 0.01, beta1: 0.9, beta2: 0.999, epsilon: 1e-8, t: $0, weightDecay: 0.1, decoupled: true)) },
         reference: { adam($0, $1, $2, $3, $4, lr: 0.01, l2: 0, decoupled: 0.1) }),
    Case(name: "sgd", step: { _ in .sgd(SGDStep(lr: 0.1, momentum: 0, weightDecay: 0)) },
         reference: { w, m, v, g, _ in (w - 0.1 * g, m, v) }),
    Case(name: "sgd with momentum and decay", step: { _ in .sgd(SGDStep(lr: 0.1, momentum: 0.9, weightDecay: 0.01)) },
         reference: { w, m, v, g, _ in let b = 0.9 * m + (g + 0.01 * w); return (w - 0.1 * b, b, v) }),
]

@Test(arguments: cases)
private func optimizerStepsMatchTheirFormulas(_ c: Case) {
    let n = 37
    var w = (0..<n).map { Float($0 % 7) * 0.25 - 0.5 }, m = [Float](repeating: 0, count: n), v = m
    var rw = w.map(Double.init), rm = [Double](repeating: 0, count: n), rv = rm
    for t in 1...3 {
        let g = (0..<n).map { Float(($0 * 5 + t * 3) % 11) * 0.1 - 0.5 }
        #expect(OptimizerUpdate.apply(c.step(t), w: &w, g: g, m: &m, v: &v, count: n))
        for i in 0..<n { (rw[i], rm[i], rv[i]) = c.reference(rw[i], rm[i], rv[i], Double(g[i]), t) }
    }
    for i in 0..<n {
        #expect(abs(Double(w[i]) - rw[i]) < 2e-6 * max(1, abs(rw[i])), "\(c.name) w[\(i)]: \(w[i]) vs \(rw[i])")
        #expect(abs(Double(m[i]) - rm[i]) < 2e-6, "\(c.name) m[\(i)]")
    }
    // An element's bits do not depend on whether it fell in a vector or in the tail: the same
    // values placed at index 0 (a vector) and at index 16 + 3 of a 20-long run (the tail).
    var a = [Float](repeating: 0.3, count: 20), ma = [Float](repeating: 0.01, count: 20), va = [Float](repeating: 0.001, count: 20)
    var g = [Float](repeating: -0.2, count: 20)
    g[0] = 0.7; g[19] = 0.7
    OptimizerUpdate.apply(c.step(2), w: &a, g: g, m: &ma, v: &va, count: 20)
    #expect(a[0].bitPattern == a[19].bitPattern && ma[0].bitPattern == ma[19].bitPattern && va[0].bitPattern == va[19].bitPattern)
}

@Test func everyOptimizerReportsNonFiniteGradients() {
    for c in cases {
        var w: [Float] = [1, 1, 1], m: [Float] = [0, 0, 0], v: [Float] = [0, 0, 0]
        #expect(!OptimizerUpdate.apply(c.step(1), w: &w, g: [0.5, .nan, 1], m: &m, v: &v, count: 3), "\(c.name)")
        var w2 = [Float](repeating: 1, count: 20), m2 = [Float](repeating: 0, count: 20), v2 = m2
        var g2 = [Float](repeating: 0.5, count: 20)
        g2[3] = .infinity
        #expect(!OptimizerUpdate.apply(c.step(1), w: &w2, g: g2, m: &m2, v: &v2, count: 20), "\(c.name)")
    }
}

/// Adam without decay is the loop it always was: `OptimizerUpdate` with `.adam` gives the bits
/// of `AdamUpdate.apply` with the step as Adam alone built it.
@Test func plainAdamKeepsItsBits() {
    let n = 40
    var w1 = (0..<n).map { Float($0) * 0.01 }, w2 = w1, m1 = [Float](repeating: 0, count: n), m2 = m1, v1 = m1, v2 = m1
    let g = (0..<n).map { Float($0 % 9) * 0.1 - 0.4 }
    for t in 1...4 {
        AdamUpdate.apply(AdamStep(lr: 1e-3, beta1: 0.9, beta2: 0.999, epsilon: 1e-8, t: t), w: &w1, g: g, m: &m1, v: &v1, count: n)
        OptimizerUpdate.apply(.adam(AdamStep(lr: 1e-3, beta1: 0.9, beta2: 0.999, epsilon: 1e-8, t: t, weightDecay: 0)),
                              w: &w2, g: g, m: &m2, v: &v2, count: n)
    }
    #expect(w1.map(\.bitPattern) == w2.map(\.bitPattern))
}
