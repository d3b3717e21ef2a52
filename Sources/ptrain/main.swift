// ptrain: a thin command line over PTTraining. Usage errors exit 2, run-time failures exit 1,
// each with one line on stderr.
import ArgumentParser
import Foundation
import PTModel
import PTRuntime
import PTTraining

struct PTrain: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ptrain",
        abstract: "Data-parallel CPU training of convolutional networks, with the same bits at any thread count.",
        discussion: """
            Training flags (see 'ptrain train --help'): --data DIR, --resize N,
            --no-normalize, --spec SPEC, --threads N, --batch N, --steps N | --epochs N,
            --optimizer adam|adamw|sgd, --lr, --lr-schedule, --warmup, --weight-decay,
            --momentum, --beta1, --beta2, --eps, --augment flip|crop=N, --seed,
            --precision fp32|bf16, --eval-every N, --log-every N, --metrics FILE,
            --checkpoint PATH, --save-every N, --resume PATH.

            """ + Train.specHelp,
        subcommands: [Train.self, Eval.self, Predict.self, Bench.self, Plot.self],
        defaultSubcommand: Train.self)
}

struct UsageError: Error, CustomStringConvertible {
    var description: String
}

/// A run that started and could not go on (exit 1), said in the command line's words.
struct RunFailure: Error, CustomStringConvertible {
    var description: String
}

/// A debug build optimises the numeric modules (Package.swift) but not the CLI, data loading and
/// checkpoint code: it trains at about two thirds of the release build's speed. Said once, at start.
func debugBuildNotice() {
    #if DEBUG
    print("ptrain: debug build: the kernels are optimised, data loading and checkpoints are not (about 2/3 of release speed); swift run -c release ptrain ... runs the release build")
    #endif
}

func fail(_ message: String, code: Int32) -> Never {
    // Under mpirun every rank meets the same bad input: rank 0 alone says so.
    if ProcessGroup.launched.rank == 0 { FileHandle.standardError.write(Data("ptrain: error: \(message)\n".utf8)) }
    exit(code)
}

// Under mpirun every rank runs this program; rank 0 alone prints (and writes metrics and checkpoints).
if ProcessGroup.launched.rank > 0 { _ = dup2(open("/dev/null", O_WRONLY), STDOUT_FILENO) }

// A write past RLIMIT_FSIZE should fail with EFBIG (reported, old checkpoint kept), not kill us.
signal(SIGXFSZ, SIG_IGN)

do {
    var command = try PTrain.parseAsRoot()
    try command.run()
} catch let e as UsageError {
    fail(e.description, code: 2)
} catch let e as DataError {
    fail(e.description, code: 1)
} catch let e as RunFailure {
    fail(e.description, code: 1)
} catch let e as ShapeError {
    fail(e.message, code: 2)
} catch let e as LaunchError {
    fail(e.description, code: 2)
} catch {
    let code = PTrain.exitCode(for: error)
    if code == .success { PTrain.exit(withError: error) }  // --help, --version
    let message = PTrain.message(for: error).split(separator: "\n").first.map(String.init) ?? "\(error)"
    fail(message, code: code == .validationFailure ? 2 : code.rawValue)
}
