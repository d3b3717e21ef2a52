// What the subcommands share about files: a checkpoint's model, the data, a writable path.
import ArgumentParser
import Foundation
import PTKernels
import PTModel
import PTRuntime
import PTTraining

/// Refuses an output path whose directory cannot take the file, before any work is done.
func checkWritable(_ path: String) throws {
    let dir = URL(fileURLWithPath: path).deletingLastPathComponent().path
    var isDir: ObjCBool = false
    guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue else {
        throw UsageError(description: "\(path): directory \(dir) does not exist")
    }
    guard access(dir, W_OK) == 0 else { throw UsageError(description: "\(path): directory \(dir) is not writable") }
    if FileManager.default.fileExists(atPath: path, isDirectory: &isDir), isDir.boolValue {
        throw UsageError(description: "\(path) is a directory")
    }
}

/// `--precision` of a command: parsed on this machine, a one-line usage error otherwise.
func precisionFlag(_ text: String) throws -> Precision {
    do { return try Precision.parse(text) } catch { throw UsageError(description: error.description) }
}

/// Under mpirun every rank must run one precision on one bf16 path (the paths' bits differ, and the
/// ranks' sums meet): the ranks compare theirs, and all stop with the same line when they differ.
func agreeAcrossRanks(_ precision: Precision, group: ProcessGroup) throws {
    guard group.size > 1 else { return }
    let code = Int32(precision.bf16Path.map { 1 + BF16Path.allCases.firstIndex(of: $0)! } ?? 0)
    if group.maximum(code) != -group.maximum(-code) {
        throw UsageError(description: "the ranks of this job would run different precisions or bf16 paths (rank 0: \(precision)), whose bits differ; give every rank the same --precision and \(Precision.pathVariable)")
    }
}

/// Loads a checkpoint's model (not its optimizer state) for eval and predict, in `precision` (nil:
/// the checkpoint's own, on this machine's fastest bf16 path when it was trained on one this CPU
/// lacks).
func loadModel(_ path: String, precision text: String? = nil, group: ProcessGroup = .single) throws -> (Network, CheckpointState) {
    let (state, tensors) = try Checkpoint.load(path)
    var precision = state.precision
    if let text { precision = try precisionFlag(text) }
    else if case let .bf16(p) = precision, !BF16Path.available.contains(p) { precision = try precisionFlag("bf16") }
    let spec: ModelSpec
    do { spec = try ModelSpec(parsing: state.spec) } catch { throw DataError(path, "checkpoint spec does not parse: \(error)") }
    try agreeAcrossRanks(precision, group: group)
    let net: Network
    do {
        net = try Network(spec: spec, input: state.input, classes: state.classes, capacity: 100,
                          threads: Numa.shared.cpuCount, seed: 0, precision: precision, group: group, secondMoment: false)
    } catch let e as ShapeError { throw DataError(path, "checkpoint spec: \(e.message)") }
    try Checkpoint.restore(net, from: tensors, path: path, optimizer: nil)
    return (net, state)
}

/// Loads a split of the data in `directory`, saying what an image folder will take before it
/// decodes and showing its progress on a terminal. `classNames`, `channels` and `resize`: as
/// `Dataset.load` takes them (the training set's or a checkpoint's).
func loadData(_ directory: String, _ split: Dataset.Split, classNames: [String]? = nil, channels: Int? = nil,
              resize: Int? = nil) throws -> Dataset {
    let rank0 = ProcessGroup.launched.rank == 0
    let terminal = ProgressReporter.stderrIsTerminal && rank0
    let announce: (String) -> Void = { line in if rank0 { print("ptrain: " + line); fflush(nil) } }
    let set = try Dataset.load(directory: directory, split: split, classNames: classNames, channels: channels,
                               resize: resize, announce: announce) { done, total in
        if terminal { FileHandle.standardError.write(Data("\r\u{1B}[Kloading \(split.rawValue) images: \(done)/\(total)".utf8)) }
    }
    if terminal { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
    return set
}

/// A split of `directory` for a checkpoint's model: read with the checkpoint's class names, or,
/// from a version-1 checkpoint (which stored none), with the data's own, as many as the model has.
func loadData(_ directory: String, _ split: Dataset.Split, for state: CheckpointState) throws -> Dataset {
    if state.namesStored {
        return try loadData(directory, split, classNames: state.classNames, channels: state.input.c, resize: state.resize)
    }
    let set = try loadData(directory, split, channels: state.input.c, resize: state.resize)
    guard set.classes == state.classes else {
        throw DataError(directory, "has \(set.classes) classes but the checkpoint's model has \(state.classes)")
    }
    return set
}
