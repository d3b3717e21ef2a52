// `ptrain plot`: a metrics file drawn as SVG.
import ArgumentParser
import Foundation
import PTModel
import PTRuntime
import PTTraining

struct Plot: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Draw loss and test accuracy from a --metrics file as SVG.")

    @Argument(help: "A JSON Lines file written by --metrics.")
    var file: String
    @Option(help: "Where to write the SVG.")
    var svg: String

    func run() throws {
        let (loss, acc) = try MetricsPlot.read(file)
        let text = MetricsPlot.svg(loss: loss, accuracy: acc, title: (file as NSString).lastPathComponent)
        try AtomicFile.write(svg, data: Data(text.utf8))
        print("wrote \(svg)")
    }
}
