// The ptrain binary run as a user runs it.
import Foundation
import PTTestSupport
import Testing

struct Result {
    var status: Int32
    var reason: Process.TerminationReason
    var out: String
    var err: String
}

let binary: String = {
    let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    var dir = URL(fileURLWithPath: exe).deletingLastPathComponent()
    if dir.pathExtension == "xctest" || dir.lastPathComponent == "MacOS" { dir = dir.deletingLastPathComponent() }
    return dir.appendingPathComponent("ptrain").path
}()

func ptrain(_ args: [String]) throws -> Result { try launch(binary, args) }

/// Runs `executable` to its end (killed after `seconds`, which is recorded as a test issue).
func launch(_ executable: String, _ args: [String], environment: [String: String] = [:], seconds: Double = 300) throws -> Result {
    let dir = Scratch.directory("cli")
    defer { Scratch.remove(dir) }
    let outPath = dir + "/out", errPath = dir + "/err"
    _ = FileManager.default.createFile(atPath: outPath, contents: nil)
    _ = FileManager.default.createFile(atPath: errPath, contents: nil)
    let p = Process()
    p.executableURL = URL(fileURLWithPath: executable)
    p.arguments = args
    if !environment.isEmpty { p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
    p.standardOutput = FileHandle(forWritingAtPath: outPath)
    p.standardError = FileHandle(forWritingAtPath: errPath)
    try p.run()
    waitOrKill(p, seconds: seconds)
    return Result(status: p.terminationStatus, reason: p.terminationReason,
                  out: (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? "",
                  err: (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? "")
}

/// A usage or data error: the exit code, one line on stderr naming the problem, no crash.
func expectCleanError(_ r: Result, code: Int32, mentions: [String], sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(r.reason == .exit, "killed by a signal", sourceLocation: sourceLocation)
    #expect(r.status == code, "exit \(r.status), stderr: \(r.err)", sourceLocation: sourceLocation)
    let lines = r.err.split(separator: "\n")
    #expect(lines.count == 1, "stderr: \(r.err)", sourceLocation: sourceLocation)
    for m in mentions { #expect(r.err.contains(m), "stderr: \(r.err)", sourceLocation: sourceLocation) }
    #expect(!r.err.contains("Fatal error") && !r.err.contains("Stack dump"), sourceLocation: sourceLocation)
}

/// A tiny MNIST-format data directory: 8x8 images whose class is drawn as a brighter column.
func tinyData() throws -> String {
    let dir = Scratch.directory("data")
    func write(_ split: String, _ n: Int) {
        var img: [UInt8] = [0, 0, 8, 3, 0, 0, UInt8(n >> 8), UInt8(n & 255), 0, 0, 0, 8, 0, 0, 0, 8]
        var lab: [UInt8] = [0, 0, 8, 1, 0, 0, UInt8(n >> 8), UInt8(n & 255)]
        for i in 0..<n {
            let c = (i * 7) % 10
            for p in 0..<64 { img.append(UInt8((p % 8 == c % 8 ? 180 : 0) + (c >= 8 && p < 8 ? 30 : 0) + (i * 31 + p * 17) % 40)) }
            lab.append(UInt8(c))
        }
        _ = FileManager.default.createFile(atPath: "\(dir)/\(split)-images-idx3-ubyte", contents: Data(img))
        _ = FileManager.default.createFile(atPath: "\(dir)/\(split)-labels-idx1-ubyte", contents: Data(lab))
    }
    write("train", 300)
    write("t10k", 100)
    return dir
}

@Test func helpDocumentsTheSpecAndFlags() throws {
    let r = try ptrain(["--help"])
    #expect(r.status == 0)
    for s in ["MODEL SPEC", "conv(OUT,K", "bn ", "res(...)", "gap ", "bias=false", "--threads", "--batch", "--metrics", "--resize", "plot"] {
        #expect(r.out.contains(s), "\(s)")
    }
    let train = try ptrain(["train", "--help"])
    #expect(train.status == 0 && train.out.contains("--eval-every"))
}

@Test func usageErrors() throws {
    expectCleanError(try ptrain(["--thread", "2"]), code: 2, mentions: ["--thread"])
    expectCleanError(try ptrain(["--threads", "0"]), code: 2, mentions: ["--threads", "0"])
    expectCleanError(try ptrain(["--threads", "5000"]), code: 2, mentions: ["--threads"])
    expectCleanError(try ptrain(["--batch", "0"]), code: 2, mentions: ["--batch"])
    expectCleanError(try ptrain(["--lr", "nan"]), code: 2, mentions: ["--lr"])
    expectCleanError(try ptrain(["--lr", "-1"]), code: 2, mentions: ["--lr"])
    expectCleanError(try ptrain(["--steps", "0"]), code: 2, mentions: ["--steps"])
    expectCleanError(try ptrain(["--steps", "5", "--epochs", "1"]), code: 2, mentions: ["--steps", "--epochs"])
    expectCleanError(try ptrain(["--spec", "conv(4,3) relu maxpoo(2) fc(10)"]), code: 2, mentions: ["column 16", "maxpoo"])
}

@Test func dataAndShapeErrors() throws {
    expectCleanError(try ptrain(["--data", "/nonexistent/dir", "--steps", "1"]), code: 1, mentions: ["/nonexistent/dir", "does not exist"])
    let data = try tinyData()
    defer { Scratch.remove(data) }
    // 8x8 input: a 5th 2x2 pool has nothing left.
    expectCleanError(try ptrain(["--data", data, "--spec", "conv(2,3) relu maxpool(2) maxpool(2) maxpool(2) maxpool(2) fc(10)"]),
                     code: 2, mentions: ["maxpool(2)", "1x1x2"])
    expectCleanError(try ptrain(["--data", data, "--spec", "fc(8) relu fc(3)"]), code: 2, mentions: ["3 outputs", "10 classes"])
    expectCleanError(try ptrain(["--data", data, "--batch", "301", "--steps", "1"]), code: 2, mentions: ["--batch 301", "300 images"])
    // A model that cannot fit in memory is refused before anything is allocated, with the estimate.
    expectCleanError(try ptrain(["--data", data, "--spec", "fc(1000000) relu fc(1000000) relu fc(10)", "--steps", "1"]),
                     code: 2, mentions: ["needs about", "GiB", "memory is available"])
}

@Test func trainsEndToEndWithFlatMemoryAndPlots() throws {
    let data = try tinyData()
    defer { Scratch.remove(data) }
    let dir = Scratch.directory("run")
    let r = try ptrain(["--data", data, "--spec", "conv(4,3) relu maxpool(2) fc(16) relu fc(10)", "--threads", "2",
                        "--batch", "10", "--steps", "1000", "--lr", "0.01", "--log-every", "10", "--eval-every", "500",
                        "--metrics", dir + "/m.jsonl"])
    #expect(r.status == 0, "\(r.err)")
    #expect(r.out.contains("done: 1000 steps"))
    #expect(r.out.contains("step 1000/1000"))
    let lines = try String(contentsOfFile: dir + "/m.jsonl", encoding: .utf8).split(separator: "\n")
    let records = lines.compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
    #expect(records.count == lines.count)
    let steps = records.filter { $0["loss"] != nil }
    let evals = records.filter { $0["test_accuracy"] != nil }
    #expect(steps.count == 100 && evals.count == 2)
    for key in ["step", "loss", "samples_per_sec", "rss_mb"] { #expect(steps[0][key] != nil, "\(key)") }
    // The model learns this easy set.
    let acc = (evals.last!["test_accuracy"] as! NSNumber).doubleValue
    #expect(acc > 0.9, "test accuracy \(acc)")
    // Memory is flat from step 10 to step 1000 (no growth per step).
    let rss = steps.map { ($0["rss_mb"] as! NSNumber).doubleValue }
    #expect(rss[0] > 0)
    #expect(rss.last! - rss[0] < 1.0, "RSS grew from \(rss[0]) MB to \(rss.last!) MB")

    let plot = try ptrain(["plot", dir + "/m.jsonl", "--svg", dir + "/m.svg"])
    #expect(plot.status == 0, "\(plot.err)")
    let svg = try String(contentsOfFile: dir + "/m.svg", encoding: .utf8)
    #expect(svg.hasPrefix("<svg") && svg.contains("polyline") && svg.hasSuffix("</svg>\n"))
    expectCleanError(try ptrain(["plot", dir + "/missing.jsonl", "--svg", dir + "/x.svg"]), code: 1, mentions: ["missing.jsonl"])
    #expect(!FileManager.default.fileExists(atPath: dir + "/x.svg"))
}

/// More threads than CPUs: one worker per CPU, said on one line, and the same losses as one thread.
@Test func moreThreadsThanCPUsRunsOneWorkerPerCPU() throws {
    let data = try tinyData()
    defer { Scratch.remove(data) }
    let args = ["--data", data, "--spec", "conv(4,3) relu maxpool(2) fc(16) relu fc(10)", "--batch", "10",
                "--steps", "30", "--log-every", "10", "--eval-every", "0"]
    let many = try ptrain(args + ["--threads", "1024"])
    #expect(many.status == 0, "\(many.err)")
    #expect(many.out.contains("--threads 1024 but this process may use"))
    let one = try ptrain(args + ["--threads", "1"])
    let losses = { (out: String) in out.split(separator: "\n").filter { $0.hasPrefix("step ") }.map { $0.split(separator: " ")[5] } }
    #expect(!losses(one.out).isEmpty && losses(many.out) == losses(one.out))
}

/// `bench --model-cores`: the validation line, one row per core count, and the JSON fields.
@Test func benchModelCoresPredictsAndValidates() throws {
    let dir = Scratch.directory("model")
    let r = try ptrain(["bench", "--model-cores", "4,16", "--batch", "8", "--steps", "3", "--warmup", "1",
                        "--spec", "conv(8,3) relu maxpool(2) fc(32) relu fc(10)", "--json", dir + "/m.json", "--svg", dir + "/m.svg"])
    #expect(r.status == 0, "\(r.err)")
    #expect(r.out.contains("validation: 2 workers predicted") && r.out.contains("measured") && r.out.contains("error"))
    #expect(r.out.contains("memory bandwidth 200 GB/s"))
    let rows = try JSONSerialization.jsonObject(with: try #require(FileManager.default.contents(atPath: dir + "/m.json"))) as! [[String: Any]]
    #expect(rows.map { $0["cores"] as! Int } == [4, 16])
    for row in rows {
        for key in ["predicted_step_ms", "predicted_samples_per_sec", "speedup", "efficiency", "ceiling_efficiency", "validation_error_percent"] {
            #expect(row[key] is NSNumber, "\(key): \(row)")
        }
        #expect((row["limiting_region"] as? String)?.isEmpty == false)
    }
    #expect(try String(contentsOfFile: dir + "/m.svg", encoding: .utf8).contains("cores"))
    expectCleanError(try ptrain(["bench", "--model-cores", "4,0"]), code: 2, mentions: ["--model-cores"])
    expectCleanError(try ptrain(["bench", "--model-cores", "4", "--bandwidth", "0"]), code: 2, mentions: ["--bandwidth"])
}

/// The library product from another package (Tests/ConsumerPackage, depending on this one by path):
/// it builds in Swift 6 mode and trains a small network.
@Test func anotherPackageBuildsOnTheLibraryAndTrains() throws {
    let tests = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    let package = tests.appendingPathComponent("ConsumerPackage").path
    let scratch = tests.deletingLastPathComponent().appendingPathComponent(".build-consumer").path
    let arguments = ["swift", "build", "-c", "release", "--package-path", package, "--scratch-path", scratch]
    var build = try launch("/usr/bin/env", arguments, seconds: 1200)
    if build.status != 0 {
        // A kept build can miss changes to ptrain, its path dependency (a removed file is a
        // "missing input" to SwiftPM): once more from clean before calling it a failure.
        try? FileManager.default.removeItem(atPath: scratch)
        build = try launch("/usr/bin/env", arguments, seconds: 1200)
    }
    try #require(build.status == 0, "swift build of the consumer package failed:\n\(build.out)\n\(build.err)")
    let run = try launch(scratch + "/release/Consumer", [])
    #expect(run.status == 0, "\(run.out)\(run.err)")
    #expect(run.out.hasPrefix("loss "))
}
