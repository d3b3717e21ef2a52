// Fused log-softmax + cross-entropy for one sample: never exponentiates without subtracting the
// maximum and never takes log of a softmax, so it is finite for any finite logits.
import Foundation

public enum SoftmaxCrossEntropy {
    /// Returns -log softmax(logits)[label] and writes dlogits = (softmax - onehot) * gradScale.
    public static func forwardBackward(logits: UnsafePointer<Float>, classes: Int, label: Int,
                                       gradScale: Float, dlogits: UnsafeMutablePointer<Float>) -> Float {
        let (mx, logSum) = normaliser(logits, classes)
        for j in 0..<classes {
            let p = expf(logits[j] - mx - logSum)
            dlogits[j] = (p - (j == label ? 1 : 0)) * gradScale
        }
        return logSum + mx - logits[label]
    }

    /// softmax(logits): what the training step's gradient starts from, for a prediction.
    public static func probabilities(logits: UnsafePointer<Float>, classes: Int, into p: UnsafeMutablePointer<Float>) {
        let (mx, logSum) = normaliser(logits, classes)
        for j in 0..<classes { p[j] = expf(logits[j] - mx - logSum) }
    }

    /// The largest logit and log Σ exp(logit - largest): the softmax's normaliser, computed one way.
    @inline(__always)
    static func normaliser(_ logits: UnsafePointer<Float>, _ classes: Int) -> (max: Float, logSum: Float) {
        var mx = logits[0]
        for j in 1..<classes { mx = max(mx, logits[j]) }
        var sum: Float = 0
        for j in 0..<classes { sum += expf(logits[j] - mx) }
        return (mx, logf(sum))
    }

    /// Loss only, plus the index of the largest logit (the prediction).
    public static func loss(logits: UnsafePointer<Float>, classes: Int, label: Int) -> (loss: Float, argmax: Int) {
        var mx = logits[0], arg = 0
        for j in 1..<classes where logits[j] > mx { mx = logits[j]; arg = j }
        var sum: Float = 0
        for j in 0..<classes { sum += expf(logits[j] - mx) }
        return (logf(sum) + mx - logits[label], arg)
    }
}
