// Fused log-softmax + cross-entropy for one sample: never exponentiates without subtracting the
// maximum and never takes log of a softmax, so it is finite for any finite logits.
import Foundation

public enum SoftmaxCrossEntropy {
    /// Returns -log softmax(logits)[label] and writes dlogits = (softmax - onehot) * gradScale.
    public static func forwardBackward(logits: UnsafePointer<Float>, classes: Int, label: Int,
                                       gradScale: Float, dlogits: UnsafeMutablePointer<Float>) -> Float {
        var mx = logits[0]
        for j in 1..<classes { mx = max(mx, logits[j]) }
        var sum: Float = 0
        for j in 0..<classes { sum += expf(logits[j] - mx) }
        let logSum = logf(sum)
        for j in 0..<classes {
            let p = expf(logits[j] - mx - logSum)
            dlogits[j] = (p - (j == label ? 1 : 0)) * gradScale
        }
        return logSum + mx - logits[label]
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
