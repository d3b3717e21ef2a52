// `--precision bf16` as a user runs it, on each bf16 path this CPU has (PTRAIN_BF16_PATH picks
// one): the start-up line names the path, a checkpoint records it, a resume at another thread
// count writes the unbroken run's file, and another precision is refused unless asked for.
import Foundation
import PTKernels
import PTTestSupport
import PTTraining
import Testing

let bf16Spec = "conv(4,3) relu conv(8,3) relu maxpool(2) fc(16) relu dropout(0.5) fc(10)"

@Test(arguments: BF16Path.available)
func bf16TrainsResumesExactlyAndRecordsItsPath(_ path: BF16Path) throws {
    let data = try tinyData(), dir = try runDir()
    defer { Scratch.remove(data); Scratch.remove(dir) }
    let env = [Precision.pathVariable: path.rawValue]
    func run(_ args: [String]) throws -> Result { try launch(binary, args, environment: env) }
    let common = ["--data", data, "--spec", bf16Spec, "--batch", "10", "--lr", "0.01", "--seed", "4", "--precision", "bf16"]
    let whole = try run(common + ["--steps", "40", "--threads", "2", "--checkpoint", dir + "/whole.st"])
    #expect(whole.status == 0, "\(whole.err)")
    #expect(whole.out.contains("precision bf16") && whole.out.contains("on \(path)"), "\(whole.out)")
    #expect(try Checkpoint.load(dir + "/whole.st").state.precision == .bf16(path))
    let half = try run(common + ["--steps", "20", "--threads", "1", "--checkpoint", dir + "/half.st"])
    #expect(half.status == 0, "\(half.err)")
    // The checkpoint's precision stands without the flag.
    let rest = try run(["--data", data, "--resume", dir + "/half.st", "--steps", "40", "--threads", "3", "--checkpoint", dir + "/half.st"])
    #expect(rest.status == 0, "\(rest.err)")
    #expect(contents(dir + "/whole.st") == contents(dir + "/half.st"))
    // An fp32 run of the same settings is another run.
    let fp32 = try run(Array(common.dropLast(2)) + ["--steps", "40", "--threads", "2", "--checkpoint", dir + "/fp32.st"])
    #expect(fp32.status == 0 && contents(dir + "/fp32.st") != contents(dir + "/whole.st"), "\(fp32.err)")
    #expect(try Checkpoint.load(dir + "/fp32.st").state.precision == .fp32)

    // Another precision on resume: refused, then allowed when asked, and said.
    expectCleanError(try run(["--data", data, "--resume", dir + "/half.st", "--precision", "fp32", "--steps", "50"]), code: 2,
                     mentions: ["--precision fp32", "checkpoint's bf16", "--change-precision"])
    let changed = try run(["--data", data, "--resume", dir + "/half.st", "--precision", "fp32", "--change-precision",
                           "--steps", "45", "--checkpoint", dir + "/changed.st"])
    #expect(changed.status == 0, "\(changed.err)")
    #expect(changed.out.contains("differ from an unbroken run"), "\(changed.out)")
    #expect(try Checkpoint.load(dir + "/changed.st").state.precision == .fp32)

    // bench runs it, measures that path's peak first, and records it in --json.
    let bench = try run(["bench", "--threads", "1", "--batch", "10", "--steps", "1", "--warmup", "0", "--spec", bf16Spec,
                         "--precision", "bf16", "--json", dir + "/bench.json"])
    #expect(bench.status == 0 && bench.out.contains("bf16 peak on \(path)"), "\(bench.out) \(bench.err)")
    let rows = try JSONSerialization.jsonObject(with: contents(dir + "/bench.json") ?? Data()) as? [[String: Any]]
    #expect(rows?.first?["precision"] as? String == "bf16" && rows?.first?["bf16_path"] as? String == path.rawValue)
    // The percentages are of the tile peak measured beside each step, which the row records.
    #expect(bench.out.contains("peak/core"))
    for key in ["peak_gflops_per_core", "executed_percent_of_peak"] {
        #expect((rows?.first?[key] as? NSNumber)?.doubleValue ?? -1 > 0, "\(key): \(rows ?? [])")
    }

    // Another bf16 path is another precision too (its bits differ).
    if path != .portable {
        expectCleanError(try launch(binary, ["--data", data, "--resume", dir + "/half.st", "--precision", "bf16", "--steps", "50"],
                                    environment: [Precision.pathVariable: "portable"]),
                         code: 2, mentions: ["checkpoint's bf16 on \(path)", "--change-precision"])
    }

    // eval and predict: the checkpoint's precision by default (said), or the flag's.
    var probabilities: [String: String] = [:]
    for (name, flags) in [("default", [String]()), ("fp32", ["--precision", "fp32"]), ("bf16", ["--precision", "bf16"])] {
        let e = try run(["eval", "--checkpoint", dir + "/whole.st", "--data", data] + flags)
        #expect(e.status == 0 && e.out.contains("test accuracy"), "\(flags): \(e.err)")
        #expect(e.out.contains(name == "fp32" ? "precision fp32" : "precision bf16"), "\(name): \(e.out)")
        let p = try run(["predict", "--checkpoint", dir + "/whole.st", "--data", data, "--index", "3"] + flags)
        #expect(p.status == 0 && p.out.contains("test[3]"), "\(flags): \(p.err)")
        probabilities[name] = p.out
    }
    #expect(probabilities["default"] == probabilities["bf16"])
    #expect(probabilities["fp32"] != probabilities["bf16"], "fp32 and bf16 printed the same probabilities")
}

@Test func badPrecisionFlagsAreOneLineErrors() throws {
    let data = try tinyData(), dir = try runDir()
    defer { Scratch.remove(data); Scratch.remove(dir) }
    expectCleanError(try ptrain(["--data", data, "--precision", "fp16", "--steps", "1"]), code: 2, mentions: ["--precision must be fp32 or bf16", "fp16"])
    expectCleanError(try launch(binary, ["--data", data, "--precision", "bf16", "--steps", "1"], environment: [Precision.pathVariable: "tpu"]),
                     code: 2, mentions: [Precision.pathVariable, "tpu", "amx, avx512, portable"])
    expectCleanError(try ptrain(["--data", data, "--precision", "bf16", "--change-precision"]), code: 2, mentions: ["--change-precision", "--resume"])
    expectCleanError(try ptrain(["bench", "--precision", "half"]), code: 2, mentions: ["--precision must be fp32 or bf16"])
    for missing in BF16Path.allCases where !BF16Path.available.contains(missing) {
        expectCleanError(try launch(binary, ["--data", data, "--precision", "bf16", "--steps", "1"], environment: [Precision.pathVariable: missing.rawValue]),
                         code: 2, mentions: ["this CPU has no \(missing)"])
    }
}
