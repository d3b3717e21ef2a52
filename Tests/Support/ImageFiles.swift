// Image files the data tests write, with the library the loader reads them with.
import CPNG

/// Writes a PNG of `channels` (1: grey, 3: RGB) bytes a pixel with libpng.
public func writePNG(_ path: String, width: Int, height: Int, channels: Int, pixels: [UInt8]) {
    var image = png_image()
    image.version = UInt32(PNG_IMAGE_VERSION)
    image.width = UInt32(width); image.height = UInt32(height)
    image.format = channels == 3 ? UInt32(PNG_FORMAT_RGB) : UInt32(PNG_FORMAT_GRAY)
    let ok = pixels.withUnsafeBytes { png_image_write_to_file(&image, path, 0, $0.baseAddress, 0, nil) }
    precondition(ok != 0, "writing \(path)")
}
