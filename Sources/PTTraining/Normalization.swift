// Input normalisation: each channel's mean and standard deviation over the training set (of
// pixels scaled to [0, 1]), subtracted and divided out of every input. Kept in checkpoints so
// that eval, predict and the Python reader feed the model what it was trained on.
import Foundation

public struct Normalization: Equatable, Sendable {
    public var mean: [Float]
    public var std: [Float]
    public var channels: Int { mean.count }

    public init(mean: [Float], std: [Float]) { self.mean = mean; self.std = std }

    /// Pixels as [0, 1] and nothing more (mean 0, std 1): the same floats as no normalisation.
    public static func identity(channels: Int) -> Normalization {
        Normalization(mean: Array(repeating: 0, count: channels), std: Array(repeating: 1, count: channels))
    }

    /// The training set's statistics, from a histogram of each channel's bytes: exact integer
    /// counts, so the result depends on the data alone (not on an order of summation). A channel
    /// that hardly varies (std under 1/255) keeps std 1 rather than blowing its noise up.
    public static func of(_ set: Dataset) -> Normalization {
        let c = set.shape.c
        var counts = [Int](repeating: 0, count: 256 * c)
        set.pixels.withUnsafeBufferPointer { p in
            var j = 0
            while j < p.count {
                for ch in 0..<c { counts[ch * 256 + Int(p[j + ch])] += 1 }
                j += c
            }
        }
        var mean: [Float] = [], std: [Float] = []
        for ch in 0..<c {
            var n = 0.0, sum = 0.0, squares = 0.0
            for v in 0..<256 {
                let k = Double(counts[ch * 256 + v]), x = Double(v) / 255
                n += k; sum += k * x; squares += k * x * x
            }
            let m = n > 0 ? sum / n : 0
            let s = n > 0 ? max(squares / n - m * m, 0).squareRoot() : 1
            mean.append(Float(m))
            std.append(s < 1.0 / 255 ? 1 : Float(s))
        }
        return Normalization(mean: mean, std: std)
    }

    /// What each byte of each channel becomes: `table[c * 256 + b]` = (b / 255 - mean[c]) / std[c],
    /// computed in Float as written (the Python reader computes the same).
    public var table: [Float] {
        var t = [Float](repeating: 0, count: 256 * channels)
        for c in 0..<channels {
            for b in 0..<256 { t[c * 256 + b] = (Float(b) * (1 / 255) - mean[c]) / std[c] }
        }
        return t
    }

    /// "m0,m1,..." and "s0,s1,...": Float's shortest exact text, so they read back to the same bits.
    public var text: (mean: String, std: String) {
        (mean.map { "\($0)" }.joined(separator: ","), std.map { "\($0)" }.joined(separator: ","))
    }

    /// `text`'s form read back; nil unless both hold the same number of finite values (std above 0).
    public init?(mean: String, std: String) {
        let m = mean.split(separator: ",").map { Float(String($0)) }, s = std.split(separator: ",").map { Float(String($0)) }
        guard !m.isEmpty, m.count == s.count, m.allSatisfy({ $0?.isFinite == true }), s.allSatisfy({ ($0 ?? 0) > 0 && $0!.isFinite })
        else { return nil }
        self.init(mean: m.map { $0! }, std: s.map { $0! })
    }
}
