// `ptrain predict`: a checkpoint's top classes for image files.
import ArgumentParser
import Foundation
import PTKernels
import PTModel
import PTRuntime
import PTTraining

struct Predict: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Classify JPEG/PNG/PGM images (or test-set images) with a checkpoint: top-3 classes.")
    @Option(help: "A checkpoint written by --checkpoint.")
    var checkpoint: String
    @Option(help: "fp32 or bf16 multiply-adds in convs and dense layers (default: the checkpoint's).")
    var precision: String?
    @Option(parsing: .upToNextOption, help: "Predict test-set images (one or more indices) instead of files.")
    var index: [Int] = []
    @Option(help: "Data directory whose test split --index reads.")
    var data = Dataset.defaultDirectory
    @Argument(help: "JPEG, PNG or PGM images (read as grey or RGB, as the model takes): of the model's input size, or any size when it was trained with --resize (then resized the same way).")
    var images: [String] = []

    func validate() throws {
        if index.isEmpty && images.isEmpty { throw ValidationError("give image files or --index i") }
        if !index.isEmpty && !images.isEmpty { throw ValidationError("--index and image files conflict; give one") }
        if let bad = index.first(where: { $0 < 0 }) { throw ValidationError("--index must be 0 or more, not \(bad)") }
    }

    func run() throws {
        let (net, state) = try loadModel(checkpoint, precision: precision)
        // The images to classify as a data set (labels unused), and a name for each.
        var names: [String] = [], pixels: [UInt8] = [], classes = state.classNames
        if !index.isEmpty {
            let test = try loadData(data, .test, for: state)
            classes = test.classNames
            guard test.shape == state.input else {
                throw DataError(data, "images are \(test.shape) but the checkpoint's model takes \(state.input)")
            }
            if let past = index.first(where: { $0 >= test.count }) {
                throw UsageError(description: "--index \(past) is past the \(test.count) test images")
            }
            let size = test.sampleSize
            for i in index {
                names.append("test[\(i)] (label \(test.labels[i]), \(classes[Int(test.labels[i])]))")
                pixels += test.pixels[(i * size)..<((i + 1) * size)]
            }
        } else {
            for path in images {
                if let side = state.resize {
                    var img = [UInt8](repeating: 0, count: state.input.count)
                    try img.withUnsafeMutableBytes { try ImageFile.decode(path, side: side, channels: state.input.c, into: $0) }
                    pixels += img
                } else {
                    let img = try ImageFile.read(path, channels: state.input.c)
                    guard img.width == state.input.w, img.height == state.input.h else {
                        throw DataError(path, "image is \(img.width)x\(img.height) but the model takes \(state.input.w)x\(state.input.h) (it was trained without --resize)")
                    }
                    pixels += img.pixels
                }
                names.append(path)
            }
        }
        let set = Dataset(count: names.count, shape: state.input, pixels: pixels,
                          labels: [Int32](repeating: 0, count: names.count), classNames: classes)
        var probs = [Float](repeating: 0, count: state.classes)
        Trainer.forEachPrediction(net, set, normalization: state.normalization) { i, logits in
            SoftmaxCrossEntropy.probabilities(logits: logits, classes: state.classes, into: &probs)
            let top = probs.enumerated().sorted { $0.element > $1.element }.prefix(3)
            print(names[i] + ": " + top.map { classes[$0.offset] + String(format: " %.6f", $0.element) }.joined(separator: ", "))
        }
    }
}
