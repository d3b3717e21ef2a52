// Making any image one size, as torchvision's `Resize(n)` + `CenterCrop(n)` do on a PIL image:
// the shorter side to n (the longer in proportion, truncated), then the centre n x n. The resize
// is Pillow's bilinear filter with antialiasing — the filter widened by the shrink factor, so every
// source pixel counts — computed as Pillow computes it (coefficients in doubles, then 22-bit fixed
// point; a horizontal pass to bytes, then a vertical one), so the pixels equal Pillow's.
import Foundation

public enum Resize {
    /// The size torchvision's `Resize(side)` gives a `width` x `height` image.
    public static func resizedSize(width: Int, height: Int, side: Int) -> (width: Int, height: Int) {
        let short = min(width, height), long = max(width, height)
        let newLong = Int(Double(side * long) / Double(short))
        return width <= height ? (side, newLong) : (newLong, side)
    }

    /// Where `CenterCrop(side)` starts in a `size`-long side: half the excess, rounded half to even
    /// as Python's `round` does.
    public static func cropStart(_ size: Int, _ side: Int) -> Int {
        Int((Double(size - side) / 2).rounded(.toNearestOrEven))
    }

    static let precisionBits = 32 - 8 - 2

    /// One output position's source window and fixed-point weights, for a side of `inSize` pixels
    /// resampled to `outSize`.
    struct Taps {
        var start: [Int], count: [Int], weights: [Int32], width: Int

        init(inSize: Int, outSize: Int) {
            let scale = Double(inSize) / Double(outSize)
            let filterScale = max(scale, 1)
            let support = 1.0 * filterScale  // bilinear's support is 1
            width = Int(support.rounded(.up)) * 2 + 1
            start = [Int](repeating: 0, count: outSize); count = start
            weights = [Int32](repeating: 0, count: outSize * width)
            var k = [Double](repeating: 0, count: width)
            let inverse = 1 / filterScale  // Pillow multiplies by it; dividing can differ in the last bit
            for o in 0..<outSize {
                let center = (Double(o) + 0.5) * scale
                let lo = max(Int(center - support + 0.5), 0)
                let n = min(Int(center + support + 0.5), inSize) - lo
                var total = 0.0
                for x in 0..<n {
                    let t = abs((Double(x + lo) - center + 0.5) * inverse)
                    k[x] = t < 1 ? 1 - t : 0
                    total += k[x]
                }
                for x in 0..<n {
                    let w = total != 0 ? k[x] / total : k[x]
                    let f = w * Double(1 << Self.precisionBits)
                    weights[o * width + x] = Int32(w < 0 ? f - 0.5 : f + 0.5)
                }
                start[o] = lo; count[o] = n
            }
        }

        static var precisionBits: Int { Resize.precisionBits }
    }

    @inline(__always)
    static func clip8(_ sum: Int32) -> UInt8 {
        UInt8(clamping: sum >> Int32(precisionBits))
    }

    /// Resizes `src` (`width` x `height` x `channels` bytes) to the torchvision size for `side` —
    /// computed from `original` when given (the size before a JPEG's DCT scaling), so the result's
    /// proportions are the full image's — and writes the centre `side` x `side` into `dst`.
    public static func resizeAndCrop(_ src: UnsafeBufferPointer<UInt8>, width: Int, height: Int, channels: Int,
                                     side: Int, original: (width: Int, height: Int)? = nil,
                                     into dst: UnsafeMutableBufferPointer<UInt8>) {
        let full = original ?? (width, height)
        let (ow, oh) = resizedSize(width: full.width, height: full.height, side: side)
        precondition(src.count == width * height * channels && dst.count == side * side * channels && ow >= side && oh >= side)
        let horizontal = Taps(inSize: width, outSize: ow), vertical = Taps(inSize: height, outSize: oh)
        // Only the rows and columns the crop keeps are computed: each output pixel depends on its own
        // taps alone, so the crop of the whole equals the whole computed in part.
        let left = cropStart(ow, side), top = cropStart(oh, side)
        let rowLo = vertical.start[top], rowHi = vertical.start[top + side - 1] + vertical.count[top + side - 1]
        // The horizontal pass over the source rows the kept output rows read, to bytes.
        var middle = [UInt8](repeating: 0, count: (rowHi - rowLo) * side * channels)
        let half = Int32(1 << (precisionBits - 1))
        middle.withUnsafeMutableBufferPointer { mid in
            for y in rowLo..<rowHi {
                let srcRow = y * width * channels, midRow = (y - rowLo) * side * channels
                for x in 0..<side {
                    let o = left + x, lo = horizontal.start[o], n = horizontal.count[o], k = o * horizontal.width
                    for c in 0..<channels {
                        var sum = half
                        for t in 0..<n { sum &+= Int32(src[srcRow + (lo + t) * channels + c]) &* horizontal.weights[k + t] }
                        mid[midRow + x * channels + c] = clip8(sum)
                    }
                }
            }
            for y in 0..<side {
                let o = top + y, lo = vertical.start[o] - rowLo, n = vertical.count[o], k = o * vertical.width
                for i in 0..<(side * channels) {
                    var sum = half
                    for t in 0..<n { sum &+= Int32(mid[(lo + t) * side * channels + i]) &* vertical.weights[k + t] }
                    dst[y * side * channels + i] = clip8(sum)
                }
            }
        }
    }
}
