// `ptrain eval`: a checkpoint's loss, accuracy and confusion matrix on a test set.
import ArgumentParser
import Foundation
import PTModel
import PTRuntime
import PTTraining

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Test loss, accuracy and confusion matrix of a checkpoint.")
    @Option(help: "A checkpoint written by --checkpoint.")
    var checkpoint: String
    @Option(help: "fp32 or bf16 multiply-adds in convs and dense layers (default: the checkpoint's).")
    var precision: String?
    @Option(help: "Data directory (MNIST-format IDX, CIFAR-10 binary or an image folder; docs/DATA.md): its test split.")
    var data = Dataset.defaultDirectory

    func run() throws {
        let (net, state) = try loadModel(checkpoint, precision: precision, group: try ProcessGroup.world())
        let test = try loadData(data, .test, for: state)
        guard state.input == test.shape else {
            throw DataError(data, "images are \(test.shape) but the checkpoint's model takes \(state.input)")
        }
        var confusion = [[Int]](repeating: [Int](repeating: 0, count: state.classes), count: state.classes)
        let e = Trainer.evaluate(net, test, normalization: state.normalization) { label, predicted in confusion[label][predicted] += 1 }
        print("checkpoint: \(checkpoint) (step \(state.step)); \(net.precision.startupLine)")
        print(String(format: "test loss %.4f, test accuracy %.2f%% (%d/%d)", e.loss, e.accuracy * 100, e.correct, e.count))
        let names = test.classNames
        let width = max(names.map(\.count).max() ?? 5, 6)
        print("confusion matrix (rows: true class, columns: predicted)")
        print(String(repeating: " ", count: width + 2) + (0..<state.classes).map { String(format: "%5d", $0) }.joined())
        for (i, row) in confusion.enumerated() {
            let label = names[i].padding(toLength: width, withPad: " ", startingAt: 0)
            print("\(label)  " + row.map { String(format: "%5d", $0) }.joined() + "   \(i)")
        }
        fflush(nil)
        net.group.finish()
    }
}
