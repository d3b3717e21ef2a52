// Image files the data tests write, with the library the loader reads them with.
import CPNG
import Foundation
import PTTestJPEG

/// Writes a PNG of `channels` (1: grey, 3: RGB) bytes a pixel with libpng.
public func writePNG(_ path: String, width: Int, height: Int, channels: Int, pixels: [UInt8]) {
    var image = png_image()
    image.version = UInt32(PNG_IMAGE_VERSION)
    image.width = UInt32(width); image.height = UInt32(height)
    image.format = channels == 3 ? UInt32(PNG_FORMAT_RGB) : UInt32(PNG_FORMAT_GRAY)
    let ok = pixels.withUnsafeBytes { png_image_write_to_file(&image, path, 0, $0.baseAddress, 0, nil) }
    precondition(ok != 0, "writing \(path)")
}

/// Writes a JPEG of `components` (1 grey, 3 RGB, 4 CMYK stored inverted, as Adobe's files are)
/// bytes a pixel with libjpeg: baseline or progressive, with an EXIF block when given.
public func writeJPEG(_ path: String, width: Int, height: Int, components: Int, pixels: [UInt8], quality: Int = 95,
                      progressive: Bool = false, exif: [UInt8] = []) {
    precondition(pixels.count == width * height * components)
    let rc = pt_test_jpeg_write(path, pixels, Int32(width), Int32(height), Int32(components), Int32(quality),
                                progressive ? 1 : 0, exif, Int32(exif.count))
    precondition(rc == 0, "writing \(path)")
}

/// A smooth test picture (gradients and a soft bump: what JPEG keeps well), `components` bytes a pixel.
public func smoothPicture(width: Int, height: Int, components: Int, seed: Int = 0) -> [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(width * height * components)
    for y in 0..<height { for x in 0..<width { for c in 0..<components {
        let fx = Double(x) / Double(max(width - 1, 1)), fy = Double(y) / Double(max(height - 1, 1))
        let bump = exp(-((fx - 0.4) * (fx - 0.4) + (fy - 0.6) * (fy - 0.6)) * 6)
        let v = 30 + 150 * (c % 2 == 0 ? fx : fy) * 0.6 + 70 * bump + Double((c * 37 + seed * 11) % 40)
        out.append(UInt8(max(0, min(255, v.rounded()))))
    } } }
    return out
}

/// A photo folder as users have them: JPEG and PNG of several sizes, grey and colour, with files
/// that are not images beside them.
public func writePhotoFolder(_ root: String) {
    for split in ["train", "test"] {
        for (c, name) in ["cats", "dogs"].enumerated() {
            try! FileManager.default.createDirectory(atPath: "\(root)/\(split)/\(name)", withIntermediateDirectories: true)
            for i in 0..<(split == "train" ? 3 : 1) {
                let w = 20 + 7 * i + c, h = 30 - 3 * i
                let px = smoothPicture(width: w, height: h, components: i == 1 ? 1 : 3, seed: c * 10 + i)
                if i == 2 {
                    writePNG("\(root)/\(split)/\(name)/\(i).png", width: w, height: h, channels: 3, pixels: px)
                } else {
                    writeJPEG("\(root)/\(split)/\(name)/\(i).jpg", width: w, height: h, components: i == 1 ? 1 : 3, pixels: px,
                              progressive: i == 1)
                }
            }
        }
    }
    _ = FileManager.default.createFile(atPath: root + "/train/cats/Thumbs.db", contents: Data([0, 1, 2]))
    _ = FileManager.default.createFile(atPath: root + "/train/dogs/README.txt", contents: Data("dogs".utf8))
    _ = FileManager.default.createFile(atPath: root + "/train/LICENSE", contents: Data("cc-by".utf8))
}
