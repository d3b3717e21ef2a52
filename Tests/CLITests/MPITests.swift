// ptrain under mpirun, as a user runs it: every (ranks, threads) gives the single process's bits,
// resume across rank counts, SIGTERM to mpirun, a rank that dies, bad input. These run when the
// package is built with the MPI trait (scripts/test does both builds); the default build checks
// that it refuses to run as one of several ranks.
import Foundation
import PTKernels
import PTModel
import PTTestSupport
import PTTraining
import Testing

/// The run a launcher started: Open MPI's variables, set by hand (no mpirun needed).
@Test func theDefaultBuildRefusesToRunAsOneOfSeveralRanks() throws {
    #if MPI
    // The MPI build would start MPI with these; the MPI tests below cover it.
    #else
    let r = try launch(binary, ["--steps", "1", "--data", try tinyData()],
                       environment: ["OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "0"], seconds: 60)
    expectCleanError(r, code: 2, mentions: ["built without MPI", "--traits MPI"])
    #endif
}

#if MPI
let mpirun = "/usr/bin/mpirun"
/// mpirun refuses root without these; CI runs as root.
let mpiEnvironment = ["OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"]

enum Transport: String, CaseIterable, Sendable {
    case sharedMemory, tcpLoopback
    var flags: [String] {
        switch self {
        case .sharedMemory: return []
        case .tcpLoopback: return ["--mca", "btl", "tcp,self", "--mca", "btl_tcp_if_include", "lo", "--mca", "oob_tcp_if_include", "lo"]
        }
    }
}

/// `mpirun -np ranks ptrain args`, quiet, oversubscribed (more ranks than the 2 cores here), each
/// rank free to use every core (mpirun would pin a rank and its threads to one).
func mpi(_ ranks: Int, _ args: [String], transport: Transport = .sharedMemory, environment: [String: String] = [:],
         seconds: Double = 180) throws -> Result {
    try launch(mpirun, ["-q", "-np", "\(ranks)", "--oversubscribe", "--bind-to", "none"] + transport.flags + [binary] + args,
               environment: mpiEnvironment.merging(environment) { $1 }, seconds: seconds)
}

struct SpawnError: Error { var code: Int32 }

/// A started mpirun: its pid, and where its stdout goes.
struct Job {
    var pid: pid_t
    var out: String
    var output: String { (try? String(contentsOfFile: out, encoding: .utf8)) ?? "" }

    /// Starts mpirun with a clear signal mask: a Process inherits the test runner's blocked
    /// signals, and mpirun (unlike ptrain) does not unblock them, so it would never see SIGTERM.
    static func start(_ args: [String], out: String) throws -> Job {
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var none = sigset_t(), all = sigset_t()
        sigemptyset(&none); sigfillset(&all)
        posix_spawnattr_setsigmask(&attr, &none)
        posix_spawnattr_setsigdefault(&attr, &all)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var files = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&files)
        defer { posix_spawn_file_actions_destroy(&files) }
        posix_spawn_file_actions_addopen(&files, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&files, 1, out, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_addopen(&files, 2, "/dev/null", O_WRONLY, 0)
        let argv = ([mpirun] + args).map { strdup($0) } + [nil]
        defer { for a in argv { free(a) } }
        let env = (ProcessInfo.processInfo.environment.merging(mpiEnvironment) { $1 }).map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { for e in env { free(e) } }
        var pid = pid_t()
        let rc = posix_spawn(&pid, mpirun, &files, &attr, argv, env)
        guard rc == 0 else { throw SpawnError(code: rc) }
        return Job(pid: pid, out: out)
    }

    /// Returns once stdout shows `marker` (false after 60 s).
    func wait(for marker: String) -> Bool {
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            if output.contains(marker) { return true }
            usleep(20_000)
        }
        return false
    }

    /// mpirun's exit status, or nil when it had to be killed after `seconds`.
    func finish(seconds: Double) -> Int32? {
        let deadline = Date().addingTimeInterval(seconds)
        var status: Int32 = 0
        while Date() < deadline {
            if waitpid(pid, &status, WNOHANG) == pid { return (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f) }
            usleep(20_000)
        }
        kill(pid, SIGKILL)
        waitpid(pid, &status, 0)
        return nil
    }

    /// The ranks: mpirun's children.
    var children: [pid_t] {
        ((try? String(contentsOfFile: "/proc/\(pid)/task/\(pid)/children", encoding: .utf8)) ?? "")
            .split(separator: " ").compactMap { pid_t($0) }
    }
}

/// Whether `pid` is a live process (not gone, not a zombie waiting to be reaped).
func isAlive(_ pid: pid_t) -> Bool {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = stat.lastIndex(of: ")") else { return false }
    return stat[stat.index(close, offsetBy: 2)] != "Z"
}

/// 600 training and 100 test images of Fashion-MNIST (28x28, for the reference network), as raw IDX.
func fashionSubset() throws -> String {
    let dir = Scratch.directory("fashion")
    for (split, n) in [(Dataset.Split.train, 600), (.test, 100)] {
        let d = try Dataset.load(directory: Dataset.defaultDirectory, split: split).prefix(n)
        func be(_ v: Int) -> [UInt8] { [UInt8(v >> 24), UInt8((v >> 16) & 255), UInt8((v >> 8) & 255), UInt8(v & 255)] }
        let images = [0, 0, 8, 3] + be(n) + be(d.shape.h) + be(d.shape.w) + d.pixels
        let labels = [0, 0, 8, 1] + be(n) + d.labels.map { UInt8($0) }
        let prefix = split == .train ? "train" : "t10k"
        _ = FileManager.default.createFile(atPath: "\(dir)/\(prefix)-images-idx3-ubyte", contents: Data(images))
        _ = FileManager.default.createFile(atPath: "\(dir)/\(prefix)-labels-idx1-ubyte", contents: Data(labels))
    }
    return dir
}

/// Every logged loss and evaluation of a --metrics file, as exact numbers (no timings).
func lossRecords(_ path: String) throws -> [String] {
    try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map { line in
        let r = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
        return ["step", "loss", "mean_loss", "test_loss", "test_accuracy"].compactMap { k in
            (r[k] as? NSNumber).map { "\(k)=\($0.doubleValue.bitPattern)" }
        }.joined(separator: " ")
    }
}

struct MPIRun: Sendable, CustomTestStringConvertible {
    var name: String
    var spec: String
    var batch: Int
    var data: @Sendable () throws -> String = fashionSubset
    var flags: [String] = []
    /// For every process, the single one and the ranks (a bf16 path, say).
    var environment: [String: String] = [:]
    var testDescription: String { name }
}

let resNetSpec = "conv(8,3,bias=false) bn relu maxpool(2) res(conv(8,3,bias=false) bn relu conv(8,3,bias=false) bn) relu res(conv(16,3,2,bias=false) bn relu conv(16,3,bias=false) bn) relu gap fc(32,bias=false) bn relu dropout(0.5) fc(10)"

let mpiRuns = [
    // im2col convs, an unfused average pool, dropout; 37 samples in 32 shards split unevenly.
    MPIRun(name: "small network", spec: "conv(8,3) relu maxpool(2) conv(16,3,2) relu avgpool(2) fc(32) relu dropout(0.5) fc(10)", batch: 37),
    // One-channel direct conv1, Winograd conv2, fc1 6272->1024.
    MPIRun(name: "reference network", spec: ModelSpec.reference, batch: 50),
    // RGB CIFAR-format data (normalised), augmentation, SGD with momentum and decay, a cosine
    // schedule inside its warmup: all keyed by step and sample, none by rank.
    MPIRun(name: "RGB, augmented, SGD, cosine", spec: "conv(16,3) relu maxpool(2) conv(16,3) relu maxpool(2) fc(32) relu fc(3)",
           batch: 20, data: tinyCIFAR, flags: ["--augment", "flip,crop=2", "--optimizer", "sgd", "--lr", "0.02", "--weight-decay", "1e-3",
                                                "--lr-schedule", "cosine", "--warmup", "3"]),
    // bf16 on this CPU's fastest path: bf16 im2col convs and dense layers, the forward's sums
    // passed between ranks at 32-row boundaries (fc1: 144 inputs over 3 ranks).
    MPIRun(name: "small network, bf16", spec: "conv(8,3) relu maxpool(2) conv(16,3,2) relu avgpool(2) fc(32) relu dropout(0.5) fc(10)",
           batch: 37, flags: ["--precision", "bf16"]),
    MPIRun(name: "reference network, bf16", spec: ModelSpec.reference, batch: 50, flags: ["--precision", "bf16"]),
    // The portable path, which every CPU has: its own bits, kept across ranks just the same.
    // Every ResNet stage: batch norm in the conv stack (its statistics and γ/β gradients summed
    // over every rank's samples in sample order) and after a dense layer, an identity and a
    // projected residual block, global pooling, convs and a dense layer without a bias;
    // evaluations in between (running statistics).
    MPIRun(name: "ResNet stages", spec: resNetSpec, batch: 37),
    // Winograd F(4x4) over 8x8 outputs, 4 samples' tiles a GEMM: a rank's samples start where a
    // group of 4 does not (37 samples over 2 and 3 ranks), and its shards' groups are its own.
    MPIRun(name: "grouped Winograd", spec: "conv(16,5,pad=valid) relu maxpool(3) conv(32,3,bias=false) bn relu conv(32,3) relu gap fc(10)",
           batch: 37),
    MPIRun(name: "ResNet stages, bf16", spec: resNetSpec, batch: 37, flags: ["--precision", "bf16"]),
    MPIRun(name: "small network, bf16 portable", spec: "conv(8,3) relu maxpool(2) conv(16,3,2) relu avgpool(2) fc(32) relu dropout(0.5) fc(10)",
           batch: 37, flags: ["--precision", "bf16"], environment: [Precision.pathVariable: BF16Path.portable.rawValue]),
]

@Suite(.serialized) struct MPI {
    @Test(arguments: mpiRuns, Transport.allCases)
    func everyRanksAndThreadsGivesTheSingleProcessBits(_ run: MPIRun, _ transport: Transport) throws {
        let data = try run.data(), dir = try runDir()
        defer { Scratch.remove(data); Scratch.remove(dir) }
        let common = ["--data", data, "--spec", run.spec, "--batch", "\(run.batch)", "--steps", "4", "--log-every", "1",
                      "--eval-every", "2"] + run.flags
        let single = try launch(binary, common + ["--threads", "1", "--metrics", dir + "/one.jsonl", "--checkpoint", dir + "/one.st"],
                                environment: run.environment)
        try #require(single.status == 0, "\(single.err)")
        if let name = run.environment[Precision.pathVariable], let path = BF16Path(rawValue: name) {
            #expect(single.out.contains("on \(path)"), "\(single.out)")
        }
        let reference = try #require(contents(dir + "/one.st"))
        let losses = try lossRecords(dir + "/one.jsonl")
        #expect(losses.count == 4 + 2)
        for ranks in 1...3 {
            for threads in 1...2 {
                let tag = "np\(ranks)-t\(threads)"
                let r = try mpi(ranks, common + ["--threads", "\(threads)", "--metrics", "\(dir)/\(tag).jsonl",
                                                 "--checkpoint", "\(dir)/\(tag).st"], transport: transport, environment: run.environment)
                #expect(r.status == 0, "\(tag): \(r.err)")
                #expect(contents("\(dir)/\(tag).st") == reference, "\(tag): the weights differ from --threads 1's")
                #expect(try lossRecords("\(dir)/\(tag).jsonl") == losses, "\(tag): the logged losses differ")
                // Rank 0 alone prints: one summary line, not one per rank.
                #expect(r.out.components(separatedBy: "done: 4 steps").count == 2, "\(tag): \(r.out)")
                try? FileManager.default.removeItem(atPath: "\(dir)/\(tag).st")  // 78 MB each for the reference network
            }
        }
    }

    /// Batch 2 over 3 ranks: a rank with no shard, no sample and (fc 3 inputs: one row tile) no
    /// rows; and a batch norm whose statistics that rank adds up from the others' samples alone.
    @Test(arguments: ["conv(4,3) relu maxpool(2) avgpool(7) fc(3) relu fc(10)", "conv(4,3,bias=false) bn relu maxpool(2) gap fc(3) bn relu fc(10)"])
    func moreRanksThanShardsStillGivesTheSingleProcessBits(_ spec: String) throws {
        let data = try fashionSubset(), dir = try runDir()
        defer { Scratch.remove(data); Scratch.remove(dir) }
        let common = ["--data", data, "--spec", spec, "--batch", "2",
                      "--steps", "5", "--log-every", "1", "--eval-every", "0"]
        let single = try ptrain(common + ["--threads", "1", "--metrics", dir + "/one.jsonl", "--checkpoint", dir + "/one.st"])
        try #require(single.status == 0, "\(single.err)")
        let r = try mpi(3, common + ["--threads", "1", "--metrics", dir + "/three.jsonl", "--checkpoint", dir + "/three.st"])
        #expect(r.status == 0, "\(r.err)")
        #expect(contents(dir + "/three.st") == contents(dir + "/one.st"))
        #expect(try lossRecords(dir + "/three.jsonl") == lossRecords(dir + "/one.jsonl"))
    }

    @Test func resumeAtOtherRankCountsContinuesBitForBit() throws {
        let data = try fashionSubset(), dir = try runDir()
        defer { Scratch.remove(data); Scratch.remove(dir) }
        let common = ["--data", data, "--spec", ModelSpec.reference, "--log-every", "1", "--eval-every", "0"]
        let single = try ptrain(common + ["--threads", "1", "--steps", "6", "--checkpoint", dir + "/one.st"])
        try #require(single.status == 0, "\(single.err)")
        // 2 ranks for 2 steps, 3 ranks to step 4, then one process to step 6.
        var r = try mpi(2, common + ["--threads", "1", "--steps", "2", "--checkpoint", dir + "/a.st"])
        #expect(r.status == 0, "\(r.err)")
        r = try mpi(3, common + ["--threads", "2", "--steps", "4", "--resume", dir + "/a.st", "--checkpoint", dir + "/b.st"])
        #expect(r.status == 0, "\(r.err)")
        r = try ptrain(common + ["--threads", "2", "--steps", "6", "--resume", dir + "/b.st", "--checkpoint", dir + "/c.st"])
        #expect(r.status == 0, "\(r.err)")
        #expect(contents(dir + "/c.st") == contents(dir + "/one.st"))
        // And from one process into three ranks.
        r = try ptrain(common + ["--threads", "1", "--steps", "3", "--checkpoint", dir + "/d.st"])
        r = try mpi(3, common + ["--threads", "1", "--steps", "6", "--resume", dir + "/d.st", "--checkpoint", dir + "/e.st"])
        #expect(r.status == 0, "\(r.err)")
        #expect(contents(dir + "/e.st") == contents(dir + "/one.st"))
    }

    @Test func sigtermToMpirunStopsEveryRankAfterOneStepAndRank0Saves() throws {
        let data = try fashionSubset(), dir = try runDir()
        defer { Scratch.remove(data); Scratch.remove(dir) }
        // mpirun kills the ranks 1 s after it passes SIGTERM on; the save can take longer on a
        // loaded machine (the other suites run beside this one), so give it what the README says.
        let job = try Job.start(["-q", "-np", "2", "--oversubscribe", "--bind-to", "none", "--mca", "odls_base_sigkill_timeout", "5",
                                 binary, "--data", data, "--batch", "50", "--steps", "100000", "--threads", "1", "--log-every", "5",
                                 "--checkpoint", dir + "/ck.st"], out: dir + "/live.out")
        #expect(job.wait(for: "step 10/"), "\(job.output)")
        kill(job.pid, SIGTERM)
        // mpirun ends with its own code; every rank left with 143 after the save.
        let status = job.finish(seconds: 60)  // mpirun waits out the 5 s twice
        let out = job.output
        #expect(status != nil && status != 0, "mpirun: \(String(describing: status)); \(out)")
        let stopped = try #require(out.split(separator: "\n").first { $0.hasPrefix("ptrain: stopped by SIGTERM after step") }, "\(out)")
        let step = Int(stopped.split(separator: " ").last!)!
        #expect(out.contains("saved checkpoint at step \(step)"))
        #expect(out.components(separatedBy: "stopped by").count == 2, "one rank prints")
        let (state, _) = try Checkpoint.load(dir + "/ck.st")
        #expect(state.step == step)
        // It resumes, bit for bit: two more steps equal a single process's run to that step.
        let more = try mpi(2, ["--data", data, "--threads", "1", "--steps", "\(step + 2)", "--eval-every", "0",
                               "--resume", dir + "/ck.st", "--checkpoint", dir + "/more.st"])
        #expect(more.status == 0, "\(more.err)")
        let single = try ptrain(["--data", data, "--threads", "1", "--steps", "\(step + 2)", "--eval-every", "0",
                                 "--checkpoint", dir + "/single.st"])
        #expect(single.status == 0, "\(single.err)")
        #expect(contents(dir + "/more.st") == contents(dir + "/single.st"))
    }

    @Test func aRankThatDiesEndsTheJobAndTheLastCheckpointStays() throws {
        let data = try fashionSubset(), dir = try runDir()
        defer { Scratch.remove(data); Scratch.remove(dir) }
        let job = try Job.start(["-q", "-np", "2", "--oversubscribe", "--bind-to", "none", binary, "--data", data, "--batch", "50",
                                 "--steps", "100000", "--threads", "1", "--log-every", "5", "--save-every", "10",
                                 "--checkpoint", dir + "/ck.st"], out: dir + "/live.out")
        #expect(job.wait(for: "step 15/"), "\(job.output)")
        let ranks = job.children
        try #require(ranks.count == 2, "ranks: \(ranks)")
        kill(ranks.last!, SIGKILL)
        let status = job.finish(seconds: 30)
        #expect(status != nil && status != 0, "mpirun: \(String(describing: status))")
        // mpirun has killed the other rank; a process killed during a write may take a moment to go.
        let deadline = Date().addingTimeInterval(20)
        while ranks.contains(where: isAlive) && Date() < deadline { usleep(20_000) }
        for rank in ranks { #expect(!isAlive(rank), "rank \(rank) is still running") }
        let (state, _) = try Checkpoint.load(dir + "/ck.st")
        #expect(state.step >= 10 && state.step % 10 == 0)
        let eval = try ptrain(["eval", "--checkpoint", dir + "/ck.st", "--data", data])
        #expect(eval.status == 0, "\(eval.err)")
    }

    @Test func badInputUnderMpirunSaysSoOnceWithTheSingleProcessCode() throws {
        let data = try fashionSubset(), dir = try runDir()
        defer { Scratch.remove(data); Scratch.remove(dir) }
        expectCleanError(try mpi(2, ["--batch", "0"], seconds: 60), code: 2, mentions: ["--batch"])
        expectCleanError(try mpi(3, ["--data", "/nonexistent/dir"], seconds: 60), code: 1, mentions: ["/nonexistent/dir"])
        expectCleanError(try mpi(2, ["--data", data, "--spec", "fc(8) relu fc(3)"], seconds: 60), code: 2, mentions: ["10 classes"])
        expectCleanError(try mpi(2, ["--data", data, "--resume", dir + "/missing.st"], seconds: 60), code: 1, mentions: ["missing.st"])
        // A run-time failure after MPI has started: the same on every rank, said once.
        expectCleanError(try mpi(2, ["--data", data, "--lr", "1e30", "--steps", "50", "--checkpoint", dir + "/x.st"], seconds: 60),
                         code: 1, mentions: ["non-finite gradient in fc1.weight"])
        #expect(contents(dir + "/x.st") == nil)
    }

    /// Ranks that would run different bf16 paths (another CPU, another PTRAIN_BF16_PATH) stop
    /// together with one line, for training, bench and eval alike.
    @Test func ranksOnDifferentBF16PathsRefuseTogether() throws {
        guard BF16Path.best != .portable else {
            print("skipped: this CPU has no bf16 units, so every rank's path is the portable one")
            return
        }
        let data = try fashionSubset(), dir = try runDir()
        defer { Scratch.remove(data); Scratch.remove(dir) }
        // Rank 0 is told the portable path; rank 1 takes this CPU's fastest.
        func split(_ args: [String]) throws -> Result {
            try launch(mpirun, ["-q", "-np", "2", "--oversubscribe", "--bind-to", "none", "/bin/sh", "-c",
                                "[ \"$OMPI_COMM_WORLD_RANK\" = 0 ] && export \(Precision.pathVariable)=portable; exec \"$0\" \"$@\"", binary] + args,
                       environment: mpiEnvironment, seconds: 60)
        }
        let made = try ptrain(["--data", data, "--spec", "conv(4,3) relu maxpool(2) fc(10)", "--batch", "20", "--steps", "2",
                               "--precision", "bf16", "--checkpoint", dir + "/ck.st"])
        #expect(made.status == 0, "\(made.err)")
        for args in [["--data", data, "--precision", "bf16", "--steps", "2", "--checkpoint", dir + "/x.st"],
                     ["bench", "--threads", "1", "--steps", "1", "--precision", "bf16"],
                     ["eval", "--checkpoint", dir + "/ck.st", "--data", data, "--precision", "bf16"]] {
            expectCleanError(try split(args), code: 2, mentions: ["different precisions or bf16 paths", Precision.pathVariable])
        }
        #expect(contents(dir + "/x.st") == nil)
    }

    @Test func benchAndEvalRunUnderMpirun() throws {
        let data = try fashionSubset(), dir = try runDir()
        defer { Scratch.remove(data); Scratch.remove(dir) }
        let bench = try mpi(2, ["bench", "--threads", "1,2", "--batch", "32", "--steps", "2", "--warmup", "1", "--json", dir + "/b.json"])
        #expect(bench.status == 0, "\(bench.err)")
        #expect(bench.out.components(separatedBy: "comm ms").count == 2, "one table: \(bench.out)")
        let rows = try JSONSerialization.jsonObject(with: try #require(contents(dir + "/b.json"))) as! [[String: Any]]
        #expect(rows.map { $0["threads"] as! Int } == [1, 2])
        for row in rows {
            #expect(row["ranks"] as? Int == 2)
            for key in ["median_compute_ms", "median_comm_ms", "bytes_received_per_step", "samples_per_sec",
                        "peak_gflops_per_core", "executed_percent_of_peak"] {
                #expect((row[key] as? NSNumber)?.doubleValue ?? -1 > 0, "\(key): \(row)")
            }
        }
        // eval splits the test set across ranks and prints what one process prints.
        let train = try ptrain(["--data", data, "--steps", "3", "--checkpoint", dir + "/m.st"])
        #expect(train.status == 0, "\(train.err)")
        let one = try ptrain(["eval", "--checkpoint", dir + "/m.st", "--data", data])
        let three = try mpi(3, ["eval", "--checkpoint", dir + "/m.st", "--data", data])
        #expect(one.status == 0 && three.status == 0, "\(three.err)")
        #expect(!one.out.isEmpty && three.out == one.out)
    }
}
#endif
