// Training-time augmentation: a random crop after zero padding, then a horizontal flip (the
// order torchvision's RandomCrop and RandomHorizontalFlip are usually composed in), drawn from
// a counter-based hash of (seed, epoch, sample index), so a sample's augmentation depends on
// nothing else: not the thread that assembles it, the rank, nor where in a run it resumes.
import PTKernels
import PTModel

public struct Augmentation: Equatable, Sendable, CustomStringConvertible {
    /// Mirror each image left to right with probability 1/2.
    public var flip = false
    /// Pad by this many zero (black) pixels on every side and take a crop of the original size
    /// at a random offset (0: no crop).
    public var crop = 0
    public init(flip: Bool = false, crop: Int = 0) { self.flip = flip; self.crop = crop }
    public static let none = Augmentation()
    public var isNone: Bool { self == .none }

    /// "none", or "flip", "crop=N" and both comma-separated (the flag's and the checkpoint's form).
    public var description: String {
        var parts: [String] = []
        if flip { parts.append("flip") }
        if crop > 0 { parts.append("crop=\(crop)") }
        return parts.isEmpty ? "none" : parts.joined(separator: ",")
    }

    /// Reads `description`'s forms; several texts combine ("flip" and "crop=4").
    public static func parse(_ texts: [String]) -> Result<Augmentation, SettingError> {
        var a = Augmentation()
        for part in texts.flatMap({ $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }) {
            if part == "none" { continue }
            if part == "flip" { a.flip = true; continue }
            if part.hasPrefix("crop=") {
                guard let n = Int(part.dropFirst(5)), (1...64).contains(n) else {
                    return .failure(SettingError("crop=N needs N a whole number from 1 to 64, not '\(part.dropFirst(5))'"))
                }
                a.crop = n
                continue
            }
            return .failure(SettingError("'\(part)' is not flip, crop=N or none"))
        }
        return .success(a)
    }

    /// Sample `index`'s image of epoch `epoch` into `dst` (h x w x c floats), each byte through
    /// `table` as `Dataset.convert` takes it; a padded pixel is byte 0 (black) through the table.
    @inline(__always)
    func apply(_ src: UnsafePointer<UInt8>, shape: Shape, table: UnsafePointer<Float>, seed: UInt64, epoch: Int, index: Int,
               to dst: UnsafeMutablePointer<Float>) {
        let h = Dropout.hash(seed, 0x4155_4731, UInt64(epoch), UInt64(index))
        let mirror = flip && h & 1 == 1
        let span = UInt64(2 * crop + 1)
        let dy = crop > 0 ? Int((h >> 8) % span) - crop : 0, dx = crop > 0 ? Int((h >> 32) % span) - crop : 0
        let (rows, cols, c) = (shape.h, shape.w, shape.c)
        for y in 0..<rows {
            let sy = y + dy
            for x in 0..<cols {
                let sx = (mirror ? cols - 1 - x : x) + dx
                let out = dst + (y * cols + x) * c
                if sy < 0 || sy >= rows || sx < 0 || sx >= cols {
                    for k in 0..<c { out[k] = table[k * 256] }
                } else {
                    let p = src + (sy * cols + sx) * c
                    for k in 0..<c { out[k] = table[k * 256 + Int(p[k])] }
                }
            }
        }
    }
}
