// What a run shows: a live line on a terminal, plain lines in a pipe, and JSON Lines metrics.
import Foundation

/// Appends one JSON object per line, flushed as written, so a reader never sees half a record.
public final class MetricsWriter {
    private let handle: FileHandle
    public let path: String

    public init(path: String) throws {
        self.path = path
        guard FileManager.default.createFile(atPath: path, contents: nil),
              let h = FileHandle(forWritingAtPath: path) else {
            throw DataError(path, "cannot create the metrics file: \(String(cString: strerror(errno)))")
        }
        handle = h
    }

    public func write(_ fields: KeyValuePairs<String, Double>) {
        let body = fields.map { k, v in
            "\"\(k)\":" + (v.isFinite ? (v == v.rounded() && abs(v) < 1e15 ? String(Int64(v)) : String(v)) : "null")
        }.joined(separator: ",")
        handle.write(Data(("{" + body + "}\n").utf8))
    }

    deinit { try? handle.close() }
}

public final class ProgressReporter {
    let totalSteps: Int
    let startStep: Int
    let batch: Int
    let interactive: Bool
    let logEvery: Int
    let metrics: MetricsWriter?
    let start = Date()
    var lastTime = Date()
    var lastStep = 0
    var lastDraw = Date.distantPast
    var lossSum = 0.0, lossCount = 0

    public init(totalSteps: Int, startStep: Int = 0, batch: Int, interactive: Bool, logEvery: Int, metrics: MetricsWriter?) {
        self.totalSteps = totalSteps; self.startStep = startStep; lastStep = startStep
        self.batch = batch; self.interactive = interactive
        self.logEvery = max(logEvery, 1); self.metrics = metrics
    }

    public static var stderrIsTerminal: Bool { isatty(2) != 0 }

    public func stepDone(step: Int, epoch: Int, loss: Float, lr: Double? = nil) {
        lossSum += Double(loss); lossCount += 1
        let now = Date()
        let elapsed = now.timeIntervalSince(start)
        let done = step - startStep
        let rate = Double(done * batch) / max(elapsed, 1e-9)
        if interactive, now.timeIntervalSince(lastDraw) > 0.2 || step == totalSteps {
            let eta = Double(totalSteps - step) * elapsed / Double(done)
            let line = String(format: "step %d/%d  epoch %d  loss %.4f  %.0f samples/s  ETA %@",
                              step, totalSteps, epoch + 1, loss, rate, Self.duration(eta))
            FileHandle.standardError.write(Data(("\r\u{1B}[K" + line).utf8))
            lastDraw = now
        }
        if step % logEvery == 0 || step == totalSteps {
            let interval = now.timeIntervalSince(lastTime)
            let intervalRate = Double((step - lastStep) * batch) / max(interval, 1e-9)
            let mean = lossSum / Double(max(lossCount, 1))
            if !interactive {
                let eta = Double(totalSteps - step) * elapsed / Double(done)
                print(String(format: "step %d/%d epoch %d loss %.4f (mean %.4f) %.0f samples/s eta %@",
                             step, totalSteps, epoch + 1, loss, mean, intervalRate, Self.duration(eta)))
                fflush(nil)
            }
            metrics?.write(["step": Double(step), "epoch": Double(epoch + 1), "loss": Double(loss),
                            "mean_loss": mean, "lr": lr ?? .nan, "samples_per_sec": intervalRate, "elapsed_sec": elapsed,
                            "rss_mb": Self.residentMegabytes()])
            lastTime = now; lastStep = step; lossSum = 0; lossCount = 0
        }
    }

    public func evaluation(step: Int, _ e: Evaluation) {
        clearLine()
        print(String(format: "eval step %d: test loss %.4f, test accuracy %.2f%% (%d/%d)",
                     step, e.loss, e.accuracy * 100, e.correct, e.count))
        fflush(nil)
        metrics?.write(["step": Double(step), "test_loss": e.loss, "test_accuracy": e.accuracy])
    }

    public func clearLine() {
        if interactive { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
    }

    /// Resident set size from /proc/self/statm (0 where unavailable).
    public static func residentMegabytes() -> Double {
        guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
        let fields = text.split(separator: " ")
        guard fields.count > 1, let pages = Double(fields[1]) else { return 0 }
        return pages * Double(sysconf(Int32(_SC_PAGESIZE))) / 1_048_576
    }

    public static func duration(_ s: Double) -> String {
        guard s.isFinite else { return "?" }
        let t = Int(s.rounded())
        return t >= 3600 ? "\(t / 3600)h\(t % 3600 / 60)m" : t >= 60 ? "\(t / 60)m\(t % 60)s" : "\(t)s"
    }
}
