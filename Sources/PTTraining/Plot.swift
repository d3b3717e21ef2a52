// `ptrain plot`: training loss and test accuracy against step, as a self-contained SVG.
import Foundation

public enum MetricsPlot {
    public struct Series { public var points: [(Double, Double)] = [] }

    /// Reads the loss and test-accuracy series from a --metrics JSON Lines file.
    public static func read(_ path: String) throws -> (loss: Series, accuracy: Series) {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw DataError(path, "cannot read the metrics file")
        }
        var loss = Series(), acc = Series()
        for (n, line) in String(decoding: data, as: UTF8.self).split(separator: "\n").enumerated() {
            guard let obj = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
                throw DataError(path, "line \(n + 1) is not a JSON object")
            }
            guard let step = (obj["step"] as? NSNumber)?.doubleValue else { continue }
            if let l = (obj["loss"] as? NSNumber)?.doubleValue { loss.points.append((step, l)) }
            if let a = (obj["test_accuracy"] as? NSNumber)?.doubleValue { acc.points.append((step, a * 100)) }
        }
        if loss.points.isEmpty && acc.points.isEmpty { throw DataError(path, "no loss or test_accuracy records") }
        return (loss, acc)
    }

    public static func svg(loss: Series, accuracy: Series, title: String) -> String {
        let width = 720.0, panel = 260.0, left = 70.0, right = 20.0, top = 40.0, gap = 60.0
        var out = """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(top + 2 * panel + gap + 40))" font-family="sans-serif" font-size="12">
        <rect width="100%" height="100%" fill="white"/>
        <text x="\(width / 2)" y="22" text-anchor="middle" font-size="15">\(escape(title))</text>

        """
        let maxStep = max(loss.points.map(\.0).max() ?? 1, accuracy.points.map(\.0).max() ?? 1)
        func chart(_ s: Series, y0: Double, label: String, color: String) {
            let ys = s.points.map(\.1)
            var lo = ys.min() ?? 0, hi = ys.max() ?? 1
            if hi - lo < 1e-9 { lo -= 0.5; hi += 0.5 }
            let plotW = width - left - right
            func px(_ x: Double) -> Double { left + x / maxStep * plotW }
            func py(_ y: Double) -> Double { y0 + panel - (y - lo) / (hi - lo) * panel }
            out += "<rect x=\"\(left)\" y=\"\(y0)\" width=\"\(plotW)\" height=\"\(panel)\" fill=\"none\" stroke=\"#888\"/>\n"
            for i in 0...4 {
                let v = lo + (hi - lo) * Double(i) / 4
                out += "<text x=\"\(left - 6)\" y=\"\(py(v) + 4)\" text-anchor=\"end\">\(String(format: "%.3g", v))</text>\n"
                let sx = maxStep * Double(i) / 4
                out += "<text x=\"\(px(sx))\" y=\"\(y0 + panel + 16)\" text-anchor=\"middle\">\(Int(sx))</text>\n"
            }
            out += "<text x=\"16\" y=\"\(y0 + panel / 2)\" transform=\"rotate(-90 16 \(y0 + panel / 2))\" text-anchor=\"middle\">\(label)</text>\n"
            if !s.points.isEmpty {
                let pts = s.points.map { String(format: "%.1f,%.1f", px($0.0), py($0.1)) }.joined(separator: " ")
                out += "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"1.5\" points=\"\(pts)\"/>\n"
            }
        }
        chart(loss, y0: top, label: "training loss", color: "#1f77b4")
        chart(accuracy, y0: top + panel + gap, label: "test accuracy (%)", color: "#d62728")
        out += "<text x=\"\(width / 2)\" y=\"\(top + 2 * panel + gap + 34)\" text-anchor=\"middle\">step</text>\n</svg>\n"
        return out
    }

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
    }
}
