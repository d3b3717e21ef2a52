// Where the tests write files. Every directory a test asks for lives under one root per test
// process, and the root goes when the process exits: a suite run leaves nothing behind, so runs
// repeated on one machine (CI, a developer's loop) cannot fill its disk. A root left by a run that
// was killed is swept by the next run.
import Foundation

public enum Scratch {
    static let prefix = "ptrain-tests-"

    public static let root: String = {
        let tmp = NSTemporaryDirectory()
        // Roots of test processes that no longer exist (killed, crashed) are swept first.
        for name in (try? FileManager.default.contentsOfDirectory(atPath: tmp)) ?? [] where name.hasPrefix(prefix) {
            if let pid = Int32(name.dropFirst(prefix.count)), kill(pid, 0) != 0, errno == ESRCH {
                try? FileManager.default.removeItem(atPath: tmp + name)
            }
        }
        let root = tmp + prefix + "\(getpid())"
        try! FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        atexit { try? FileManager.default.removeItem(atPath: Scratch.root) }
        return root
    }()

    /// A new empty directory under `root`; `kind` names it for whoever reads a failing run.
    public static func directory(_ kind: String) -> String {
        let dir = root + "/\(kind)-\(UUID().uuidString)"
        try! FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    /// Removes a directory `directory` gave, once a test is done with it (big files go early).
    public static func remove(_ dir: String) {
        try? FileManager.default.removeItem(atPath: dir)
    }
}
