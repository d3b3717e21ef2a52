// `ptrain predict`: a checkpoint's top classes for image files.
import ArgumentParser
import Foundation
import PTKernels
import PTModel
import PTRuntime
import PTTraining

struct Predict: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Classify PGM/PNG images (or test-set images) with a checkpoint: top-3 classes.")
    @Option(help: "A checkpoint written by --checkpoint.")
    var checkpoint: String
    @Option(help: "Predict test-set image i instead of files.")
    var index: Int?
    @Option(help: "Directory with MNIST-format IDX files (for --index and class names).")
    var data = Dataset.defaultDirectory
    @Argument(help: "Grayscale or RGB PNG/PGM images of the model's input size.")
    var images: [String] = []

    func validate() throws {
        if index == nil && images.isEmpty { throw ValidationError("give image files or --index i") }
        if index != nil && !images.isEmpty { throw ValidationError("--index and image files conflict; give one") }
        if let index, index < 0 { throw ValidationError("--index must be 0 or more, not \(index)") }
    }

    func run() throws {
        let (net, state) = try loadModel(checkpoint)
        // The images to classify as a data set (labels unused), and a name for each.
        var names: [String] = [], pixels: [UInt8] = []
        if let index {
            let test = try Dataset.load(directory: data, split: .test)
            guard index < test.count else { throw UsageError(description: "--index \(index) is past the \(test.count) test images") }
            let size = test.rows * test.cols
            names.append("test[\(index)] (label \(test.labels[index]))")
            pixels = Array(test.pixels[(index * size)..<((index + 1) * size)])
        } else {
            for path in images {
                let img = try GrayImage.read(path)
                guard img.width == state.input.w, img.height == state.input.h else {
                    throw DataError(path, "image is \(img.width)x\(img.height) but the model takes \(state.input.w)x\(state.input.h)")
                }
                names.append(path)
                pixels += img.pixels
            }
        }
        let set = Dataset(count: names.count, rows: state.input.h, cols: state.input.w, pixels: pixels,
                          labels: [UInt8](repeating: 0, count: names.count))
        let classes = classNames(state.classes, data: data)
        var probs = [Float](repeating: 0, count: state.classes)
        Trainer.forEachPrediction(net, set) { i, logits in
            SoftmaxCrossEntropy.probabilities(logits: logits, classes: state.classes, into: &probs)
            let top = probs.enumerated().sorted { $0.element > $1.element }.prefix(3)
            print(names[i] + ": " + top.map { classes[$0.offset] + String(format: " %.6f", $0.element) }.joined(separator: ", "))
        }
    }
}
